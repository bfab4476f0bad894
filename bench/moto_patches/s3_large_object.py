"""Peak RSS of a moto server during a large S3 PutObject and GetObject.

Runs each given moto (a Python interpreter with it installed) as a server on
127.0.0.1, uploads one object with a single PutObject, downloads it, and
prints the server's peak RSS for each step. The first interpreter is the
baseline; the others are printed as ratios to it.

    python bench/moto_patches/s3_large_object.py --size-mib 1024 \\
        /path/to/upstream/bin/python /path/to/patched/bin/python
"""

from __future__ import annotations

import argparse
import hashlib
import os
import tempfile
import threading
import time

from _server import client, moto_server, rss_mib


def sample_peak_rss(pid: int, stop: threading.Event, peak: list[float]) -> None:
    while not stop.is_set():
        try:
            peak[0] = max(peak[0], rss_mib(pid))
        except OSError:
            return
        time.sleep(0.02)


def measure(python: str, path: str, size: int) -> dict[str, float]:
    with moto_server(python) as (url, process):
        s3 = client("s3", url)
        s3.create_bucket(Bucket="bench")  # type: ignore[attr-defined]
        idle = rss_mib(process.pid)
        result = {"idle": idle}

        for step in ("put", "get"):
            stop, peak = threading.Event(), [idle]
            sampler = threading.Thread(
                target=sample_peak_rss, args=(process.pid, stop, peak)
            )
            sampler.start()
            start = time.monotonic()
            if step == "put":
                with open(path, "rb") as body:
                    s3.put_object(Bucket="bench", Key="big", Body=body)  # type: ignore[attr-defined]
            else:
                digest = hashlib.md5()
                stream = s3.get_object(Bucket="bench", Key="big")["Body"]  # type: ignore[attr-defined]
                received = 0
                for chunk in stream.iter_chunks(1024 * 1024):
                    digest.update(chunk)
                    received += len(chunk)
                assert received == size, (received, size)
            result[f"{step}_s"] = time.monotonic() - start
            stop.set()
            sampler.join()
            result[f"{step}_peak"] = peak[0]
        return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("pythons", nargs="+", help="baseline first")
    args = parser.parse_args()

    size = args.size_mib * 1024 * 1024
    with tempfile.NamedTemporaryFile(prefix="moto-bench-") as body:
        block = os.urandom(1024 * 1024)
        for _ in range(args.size_mib):
            body.write(block)
        body.flush()
        results = [measure(python, body.name, size) for python in args.pythons]

    base = results[0]
    print(f"object {args.size_mib} MiB, single PutObject then GetObject")
    for python, result in zip(args.pythons, results, strict=True):
        print(
            f"{python}: idle {result['idle']:.0f} MiB, "
            f"put peak {result['put_peak']:.0f} MiB in {result['put_s']:.1f} s "
            f"({result['put_peak'] / base['put_peak']:.2f}x baseline), "
            f"get peak {result['get_peak']:.0f} MiB in {result['get_s']:.1f} s "
            f"({result['get_peak'] / base['get_peak']:.2f}x baseline)"
        )


if __name__ == "__main__":
    main()
