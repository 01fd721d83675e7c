"""XEP-0363 HTTP File Upload as a hosted service (``upload.<domain>``).

:mod:`.service` answers slot requests over XMPP, :mod:`.resource` takes the
PUTs and serves the GETs on the server's HTTP service, :mod:`.files` keeps the
files on disk under ``<data_dir>/upload/``.
"""
