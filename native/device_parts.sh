# Sourced by native/device_check.sh and train/device_burst.sh: a file too large for one call to
# the lent GPU machine travels xz-compressed in parts, one part a call, with its SHA-256. A call carries 64 MiB in
# all, and what git would copy anyway (tracked files, untracked ones it does not ignore) travels
# in every call, so each part gets what is left of the 64 MiB, less 1 MiB of slack.

travel_budget() {  # travel_budget ROOT: bytes a call may carry beside the working tree
  local travels
  travels=$(cd "$1" && git ls-files -z -co --exclude-standard | xargs -0 -r du -cb 2>/dev/null | tail -1 | cut -f1)
  # DEVICE_CALL_MIB: a smaller call, for the tests
  echo $(( ${DEVICE_CALL_MIB:-64} * 1024 * 1024 - ${travels:-0} - 1024 * 1024 ))
}

spread() {  # spread SRC NAME DIR: SRC compressed into DIR1/NAME.part.00 (beside what DIR1 holds
            # already), DIR2/NAME.part.01, ...; DIR is a path prefix such as ROOT/.dev/c
  local src="$1" name="$2" dir="$3" root t budget first i=1 f
  root="$(cd "$(dirname "$dir")/.." && pwd)"
  budget="$(travel_budget "$root")"
  first=$(( budget - $(du -sb "${dir}1" | cut -f1) - 65 ))   # 65: NAME.sha256
  [ "$first" -gt 0 ] || { echo "${dir}1 alone is over a call's budget" >&2; return 1; }
  sha256sum "$src" | cut -c1-64 > "${dir}1/$name.sha256"   # join_parts checks the joined file by it
  t="$(mktemp -d)"
  xz -T2 -6 -c "$src" > "$t/x.xz" || { rm -rf "$t"; return 1; }
  head -c "$first" "$t/x.xz" > "${dir}1/$name.part.00"
  tail -c +"$(( first + 1 ))" "$t/x.xz" | split -b "$budget" -d -a 2 - "$t/p."
  for f in "$t"/p.*; do
    [ -s "$f" ] || continue
    i=$(( i + 1 )); mkdir -p "$dir$i" && mv "$f" "$dir$i/$name.part.$(printf %02d $(( i - 1 )))"
  done
  rm -rf "$t"
  du -sh "$dir"*
  echo "$i calls; beside the working tree each carries at most $(( budget >> 10 )) KiB"
}

stash_parts() {  # stash_parts DIR STAGE: whatever of DIR1, DIR2, ... this call carried, into STAGE
  local d
  for d in "$1"*; do [ -d "$d" ] && cp -r "$d"/* "$2/"; done
}

join_parts() {  # join_parts STAGE NAME DEST: the stashed parts of NAME decompressed into DEST and
                # checked against the hash spread recorded; DEST is removed when they do not match
  cat "$1/$2".part.* | xz -d -c > "$3" || { echo "joining $2 failed (a part missing?)" >&2; rm -f "$3"; return 1; }
  [ "$(sha256sum "$3" | cut -c1-64)" = "$(cat "$1/$2.sha256")" ] || { echo "$2: hash differs" >&2; rm -f "$3"; return 1; }
}
