"""Writes and reads S3 keys exactly as given, with boto3 (an S3 client no
part of haul uses), for the tests of awkward keys.

    python s3keys.py put  ENDPOINT KEY SECRET BUCKET  < [[key, hex], ...]  > [refused key, ...]
    python s3keys.py dump ENDPOINT KEY SECRET BUCKET  > [[key, hex], ...]

JSON carries every key (control characters included) as written; `dump`
lists with encoding-type=url so the XML can carry them too.
"""
import json
import sys
from urllib.parse import unquote_plus

import boto3
from botocore.config import Config


def client(endpoint, key, secret):
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=key,
        aws_secret_access_key=secret,
        region_name="us-east-1",
        config=Config(s3={"addressing_style": "path"}),
    )


def main():
    op, endpoint, key, secret, bucket = sys.argv[1:6]
    s3 = client(endpoint, key, secret)
    if op == "put":
        refused = []
        for k, data in json.load(sys.stdin):
            try:
                s3.put_object(Bucket=bucket, Key=k, Body=bytes.fromhex(data))
            except s3.exceptions.ClientError:
                refused.append(k)
        json.dump(refused, sys.stdout)
        return
    out = []
    pages = s3.get_paginator("list_objects_v2").paginate(
        Bucket=bucket, EncodingType="url"
    )
    for page in pages:
        for o in page.get("Contents", []):
            # botocore decodes the keys of an encoding-type=url listing it
            # asked for itself; one asked for explicitly comes back encoded.
            k = o["Key"]
            if page.get("EncodingType") == "url":
                k = unquote_plus(k)
            body = s3.get_object(Bucket=bucket, Key=k)["Body"].read()
            out.append([k, body.hex()])
    out.sort()
    json.dump(out, sys.stdout)


main()
