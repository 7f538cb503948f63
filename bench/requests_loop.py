"""The alternative a user writes from Zoho's samples: Python requests, one DELETE per
batch of 100 ids, in a loop, with one requests.Session() (keep-alive).

    /usr/bin/python3 bench/requests_loop.py URL TOKEN MODULE RECORD RELATED N

Delinks ids 1..N (bench/run.lua seeded them) and prints "succeeded failed seconds_inside".
"""
import sys
import time

import requests


def delink(session, base, module, record, related, ids):
    url = f"{base}/crm/v2.1/{module}/{record}/{related}"
    succeeded = failed = 0
    for i in range(0, len(ids), 100):
        r = session.delete(url, params={"ids": ",".join(ids[i:i + 100])}, timeout=30)
        for entry in r.json().get("data", []):
            if entry.get("status") == "success":
                succeeded += 1
            else:
                failed += 1
    return succeeded, failed


def main():
    base, token, module, record, related, n = sys.argv[1:7]
    ids = [f"3477061{i:012d}" for i in range(1, int(n) + 1)]
    t0 = time.monotonic()
    with requests.Session() as session:
        session.headers["Authorization"] = f"Zoho-oauthtoken {token}"
        succeeded, failed = delink(session, base, module, record, related, ids)
    print(succeeded, failed, f"{time.monotonic() - t0:.4f}")
    return 0 if succeeded == len(ids) else 1


if __name__ == "__main__":
    sys.exit(main())
