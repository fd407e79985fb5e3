"""Writes and reads S3 keys exactly as given, with boto3 (an S3 client no
part of haul uses), for the tests of awkward keys.

    python s3keys.py put  ENDPOINT KEY SECRET BUCKET  < [[key, hex], ...]  > [refused key, ...]
    python s3keys.py dump ENDPOINT KEY SECRET BUCKET  > [[key, hex], ...]
    python s3keys.py mklocked ENDPOINT KEY SECRET BUCKET   (a bucket with Object Lock enabled)
    python s3keys.py try-delete ENDPOINT KEY SECRET BUCKET < prefix
        > [[key, mode, retain-until, "deleted" | "refused"], ...]: every version
        under the prefix, deleted by version id where the server allows it

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
    if op == "mklocked":
        s3.create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=True)
        return
    if op == "try-delete":
        prefix = sys.stdin.read()
        out = []
        for page in s3.get_paginator("list_object_versions").paginate(Bucket=bucket, Prefix=prefix):
            for v in page.get("Versions", []):
                head = s3.head_object(Bucket=bucket, Key=v["Key"], VersionId=v["VersionId"])
                until = head.get("ObjectLockRetainUntilDate")
                try:
                    s3.delete_object(Bucket=bucket, Key=v["Key"], VersionId=v["VersionId"])
                    result = "deleted"
                except s3.exceptions.ClientError:
                    result = "refused"
                out.append([v["Key"], head.get("ObjectLockMode"), until.isoformat() if until else None, result])
        json.dump(out, sys.stdout)
        return
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
