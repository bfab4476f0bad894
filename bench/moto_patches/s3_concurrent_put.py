"""Errors from concurrent PutObject calls to one S3 key.

For each given moto (a Python interpreter with it installed), runs a moto
server on 127.0.0.1 and makes THREADS x PUTS PutObject calls to one key,
then the same number from a single thread (the baseline). Prints the error
count of each and the concurrent/sequential rate ratio.

    python bench/moto_patches/s3_concurrent_put.py --threads 8 --puts 500 \\
        /path/to/upstream/bin/python /path/to/patched/bin/python
"""

from __future__ import annotations

import argparse
import collections
import time
from concurrent.futures import ThreadPoolExecutor

from _server import client, moto_server
from botocore.exceptions import ClientError


def run(s3: object, threads: int, total: int) -> tuple[float, collections.Counter[str]]:
    errors: collections.Counter[str] = collections.Counter()

    def put(i: int) -> None:
        try:
            s3.put_object(Bucket="bench", Key="one-key", Body=f"body {i}".encode())  # type: ignore[attr-defined]
        except ClientError as exc:
            errors[str(exc.response["Error"].get("Code"))] += 1

    start = time.monotonic()
    with ThreadPoolExecutor(max_workers=threads) as pool:
        list(pool.map(put, range(total)))
    return total / (time.monotonic() - start), errors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--puts", type=int, default=500, help="per thread")
    parser.add_argument("pythons", nargs="+")
    args = parser.parse_args()

    total = args.threads * args.puts
    print(
        f"PutObject to one key: {args.threads} threads x {args.puts}, and 1 x {total}"
    )
    for python in args.pythons:
        with moto_server(python) as (url, _):
            s3 = client("s3", url, max_pool_connections=args.threads)
            s3.create_bucket(Bucket="bench")  # type: ignore[attr-defined]
            rate, errors = run(s3, args.threads, total)
            base_rate, base_errors = run(s3, 1, total)
        print(
            f"{python}: concurrent {sum(errors.values())} errors {dict(errors)}, "
            f"{rate:.0f}/s; sequential {sum(base_errors.values())} errors, "
            f"{base_rate:.0f}/s; rate ratio {rate / base_rate:.2f}x"
        )


if __name__ == "__main__":
    main()
