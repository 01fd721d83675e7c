"""The stream layer: bytes to stanzas and back, with the limits a server needs."""
