#!/usr/bin/env bash
# haul's main job on a local sample, with no external service: back up a
# "bucket" (a directory), change it, back it up again (only the change is
# read), restore it, refresh an older snapshot over the restore (only the
# difference moves), and verify every chunk.
#
# Usage: bash scripts/demo.sh [WORK_DIR]   (default: a new temporary directory)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "building haul"
cargo build --quiet -p haul-cli
haul=$PWD/target/debug/haul

work=${1:-$(mktemp -d -t haul-demo.XXXXXX)}
mkdir -p "$work"
bucket=$work/bucket
rm -rf "$bucket" "$work/repo" "$work/restored"
unset HAUL_PASSWORD HAUL_PASSWORD_FILE HAUL_PASSWORD_COMMAND HAUL_KEY_FILE

step "making a sample bucket in $bucket"
# Shaped like a Pachyderm bucket: incompressible chunk objects under chunk/,
# plus a little compressible metadata.
mkdir -p "$bucket/chunk" "$bucket/meta"
for i in $(seq -w 1 60); do
    head -c $(( (RANDOM % 2000 + 1) * 1024 )) /dev/urandom > "$bucket/chunk/$i.0"
done
head -c $((12 * 1024 * 1024)) /dev/urandom > "$bucket/chunk/large.0"
head -c 2000000 < <(yes 'pachyderm commit metadata') > "$bucket/meta/commits.log"
du -sh "$bucket"

step "haul init (encrypted with a new key file)"
rm -f "$work/demo.key"
"$haul" key generate "$work/demo.key"
export HAUL_KEY_FILE=$work/demo.key
"$haul" init "file://$work/repo"

step "haul backup (full)"
"$haul" backup --source "file://$bucket" --repo "file://$work/repo"
first=$("$haul" --json snapshots --repo "file://$work/repo" | grep -o '"id": "[0-9a-f]*"' | head -1 | cut -d'"' -f4)

step "changing the bucket: 3 objects added, 1 rewritten, 1 deleted"
for i in 61 62 63; do head -c 300000 /dev/urandom > "$bucket/chunk/$i.0"; done
head -c "$(stat -c %s "$bucket/chunk/05.0")" /dev/urandom > "$bucket/chunk/05.0"
rm "$bucket/chunk/07.0"

step "haul backup --dry-run (what would be read)"
"$haul" backup --dry-run --source "file://$bucket" --repo "file://$work/repo"

step "haul backup (incremental: reads only the 4 new or changed objects)"
"$haul" backup --source "file://$bucket" --repo "file://$work/repo"

step "haul snapshots"
"$haul" snapshots --repo "file://$work/repo"

step "haul restore latest into an empty place"
"$haul" restore latest --repo "file://$work/repo" --to "file://$work/restored"
diff -r "$bucket" "$work/restored" && echo "restored bucket is identical to the source"

step "haul restore of the first snapshot over it (a refresh: only the difference moves)"
"$haul" restore "$first" --repo "file://$work/repo" --to "file://$work/restored" --delete-extraneous

step "haul verify --read-data"
"$haul" verify --repo "file://$work/repo" --read-data

printf '\nDone. Everything is in %s\n' "$work"
