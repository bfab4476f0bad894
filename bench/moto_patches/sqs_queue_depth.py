"""SQS SendMessage rate on a deep queue, against the same queue empty.

For each given moto (a Python interpreter with it installed), runs a moto
server on 127.0.0.1, measures SendMessage on an empty queue (the baseline),
fills the queue to the given depth, and measures again; also ReceiveMessage
plus DeleteMessage at that depth. Prints the deep/empty ratio and the server
CPU per call.

    python bench/moto_patches/sqs_queue_depth.py --depth 5000 \\
        /path/to/upstream/bin/python /path/to/patched/bin/python
"""

from __future__ import annotations

import argparse
import time

from _server import client, moto_server, process_cpu_seconds

SAMPLE = 200


def timed(pid: int, calls: int, call: object) -> tuple[float, float]:
    """Calls per second and server CPU milliseconds per call."""
    cpu, start = process_cpu_seconds(pid), time.monotonic()
    for _ in range(calls):
        call()  # type: ignore[operator]
    elapsed = time.monotonic() - start
    return calls / elapsed, (process_cpu_seconds(pid) - cpu) * 1000 / calls


def measure(python: str, depth: int) -> dict[str, tuple[float, float]]:
    with moto_server(python) as (url, process):
        sqs = client("sqs", url)
        queue = sqs.create_queue(QueueName="bench")["QueueUrl"]  # type: ignore[attr-defined]

        def send() -> None:
            sqs.send_message(QueueUrl=queue, MessageBody="x" * 100)  # type: ignore[attr-defined]

        result = {"empty": timed(process.pid, SAMPLE, send)}
        sqs.purge_queue(QueueUrl=queue)  # type: ignore[attr-defined]

        # Fill in batches of ten, so that even a slow moto gets there in time.
        entries = [{"Id": str(i), "MessageBody": "x" * 100} for i in range(10)]
        for _ in range(depth // 10):
            sqs.send_message_batch(QueueUrl=queue, Entries=entries)  # type: ignore[attr-defined]
        result["deep"] = timed(process.pid, SAMPLE, send)

        def receive_and_delete() -> None:
            message = sqs.receive_message(QueueUrl=queue)["Messages"][0]  # type: ignore[attr-defined]
            sqs.delete_message(  # type: ignore[attr-defined]
                QueueUrl=queue, ReceiptHandle=message["ReceiptHandle"]
            )

        result["deep_receive_delete"] = timed(
            process.pid, SAMPLE // 2, receive_and_delete
        )
        return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--depth", type=int, default=5000)
    parser.add_argument("pythons", nargs="+")
    args = parser.parse_args()

    print(f"SendMessage x{SAMPLE}, empty queue vs {args.depth} messages")
    for python in args.pythons:
        result = measure(python, args.depth)
        (empty_rate, empty_cpu), (deep_rate, deep_cpu) = result["empty"], result["deep"]
        rd_rate, rd_cpu = result["deep_receive_delete"]
        print(
            f"{python}: send empty {empty_rate:.0f}/s ({empty_cpu:.1f} ms CPU), "
            f"send at depth {deep_rate:.0f}/s ({deep_cpu:.1f} ms CPU), "
            f"ratio {deep_rate / empty_rate:.2f}x; "
            f"receive+delete at depth {rd_rate:.0f}/s ({rd_cpu:.1f} ms CPU)"
        )


if __name__ == "__main__":
    main()
