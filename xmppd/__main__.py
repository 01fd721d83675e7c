"""``python -m xmppd``: the admin command, as the ``xmppd`` console script runs it."""

import sys

from xmppd.admin import main

if __name__ == "__main__":
    sys.exit(main())
