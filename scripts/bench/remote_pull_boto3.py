"""Downloads the objects listed in a keys file (``object size`` per line) from
an S3-compatible endpoint with boto3's managed transfer (parallel ranged GETs),
into a scratch directory, and prints one RESULT line per repeat with MB/s.

    python remote_pull_boto3.py --endpoint http://127.0.0.1:PORT --bucket B \
        --prefix P --keys FILE [--repeats 3]
"""

import argparse
import os
import tempfile
import time

import boto3
from boto3.s3.transfer import TransferConfig


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--endpoint", required=True)
    ap.add_argument("--bucket", required=True)
    ap.add_argument("--prefix", default="")
    ap.add_argument("--keys", required=True)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    s3 = boto3.client(
        "s3",
        endpoint_url=args.endpoint,
        region_name="us-east-1",
        aws_access_key_id="bench",
        aws_secret_access_key="bench",
    )
    # The same shape of transfer as saepipe's pull: 8 MiB ranges, 8 in flight.
    config = TransferConfig(multipart_chunksize=8 << 20, max_concurrency=8, multipart_threshold=8 << 20)
    objects = [line.split() for line in open(args.keys) if line.strip()]
    for r in range(args.repeats):
        with tempfile.TemporaryDirectory() as out:
            t = time.perf_counter()
            total = 0
            for name, size in objects:
                key = f"{args.prefix}/{name}" if args.prefix else name
                s3.download_file(args.bucket, key, os.path.join(out, name.replace("/", "_")), Config=config)
                total += int(size)
            s = time.perf_counter() - t
            print(f"RESULT op=boto3 repeat={r} bytes={total} seconds={s:.3f} mb_per_s={total / 1e6 / s:.1f}")


if __name__ == "__main__":
    main()
