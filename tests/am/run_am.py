"""Run an AM in its own process for the restart test: ``python run_am.py DATA DB_URL DELAY``.

Prints the AM API v3 URL on one line once it serves, then serves until killed.
"""

from __future__ import annotations

import sys
from pathlib import Path

from primogeni.am.service import AmService


def main() -> None:
    data, db_url, delay = Path(sys.argv[1]), sys.argv[2], float(sys.argv[3])
    service = AmService(data, db_url=db_url, driver_delay=delay, reap_interval=3600)
    print(service.urls["3"], flush=True)
    service.serve_forever()


if __name__ == "__main__":
    main()
