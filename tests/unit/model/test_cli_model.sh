#!/bin/bash
# test_cli_model.sh: `japlaid model|tokenize|encode` end to end on a tiny
# generated checkpoint: exit codes, output shapes, line-numbered errors.
# Needs $JAPLAID_BIN and $JP_DATA_DIR (set by ctest); skips (77) without the
# vocabulary or a MeCab dictionary.
set -u
J=${JAPLAID_BIN:?}
V=${JP_DATA_DIR:-}/bert-base-japanese-v3/vocab.txt
[ -r "$V" ] || { echo "skipped: no vocab"; exit 77; }
T=$(mktemp -d "${TMPDIR:-/tmp}/japlaid-cli-XXXXXX")
trap 'rm -rf "$T"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

"$J" model random --out "$T/m" --vocab-file "$V" --layers 1 --hidden 32 --heads 2 \
  --intermediate 64 --max-position 64 --dim 8 --seed 3 || fail "model random"
"$J" model random --out "$T/m2" --vocab-file "$V" --layers 1 --hidden 32 --heads 2 \
  --intermediate 64 --max-position 64 --dim 8 --seed 3 || fail "model random (again)"
cmp -s "$T/m/model.safetensors" "$T/m2/model.safetensors" || fail "same seed, different bytes"
"$J" model random --out "$T/bad" --vocab-file "$V" --heads 5 --hidden 32 2>/dev/null
[ $? -eq 1 ] || fail "hidden % heads != 0 must fail with 1"
"$J" model random --out "$T/bad" --vocab-file "$V" --dtype F8 2>/dev/null
[ $? -eq 2 ] || fail "bad --dtype must be a usage error"

info=$("$J" model info "$T/m" --json 2>"$T/err")
rc=$?
if [ $rc -ne 0 ]; then
  grep -qi "dictionary\|mecab" "$T/err" && { echo "skipped: $(cat "$T/err")"; exit 77; }
  fail "model info: $(cat "$T/err")"
fi
echo "$info" | grep -q '"kind":"bert"' || fail "info kind: $info"
echo "$info" | grep -q '"dim":8' || fail "info dim: $info"
echo "$info" | grep -Eq '"identity":"[0-9a-f]{32}"' || fail "info identity: $info"
"$J" model info "$T/m" | grep -q '^parameters: ' || fail "text info"

"$J" model static --out "$T/s" --vocab-file "$V" --dim 8 --seed 3 || fail "model static"
"$J" model info "$T/s" --json | grep -q '"kind":"static"' || fail "static info"

# tokenize: one JSON line per input line; the query is exactly 32 ids.
out=$(printf '東京は日本の首都です。\r\n\nテスト！\n' | "$J" tokenize --model "$T/m" --doc) || fail "tokenize"
[ "$(echo "$out" | wc -l)" -eq 3 ] || fail "tokenize line count: $out"
echo "$out" | sed -n 2p | grep -q '^{"ids":\[2,6,3\],"tokens":\["\[CLS\]","\[unused1\]","\[SEP\]"\],"mask":\[1,1,1\]}$' \
  || fail "empty document: $(echo "$out" | sed -n 2p)"
echo "$out" | sed -n 3p | grep -q '"mask":\[1,1,1,0,1\]' || fail "'！' must be masked: $out"
q=$(printf 'テスト\n' | "$J" tokenize --model "$T/m" --query) || fail "tokenize --query"
[ "$(echo "$q" | grep -o '"\[MASK\]"' | wc -l)" -ge 20 ] || fail "query padding: $q"

# Invalid UTF-8 on line 2: exit 1, the line number on stderr, no crash.
printf 'ok\n\xff\xfe\nok\n' | "$J" tokenize --model "$T/m" --doc >/dev/null 2>"$T/err"
[ $? -eq 1 ] || fail "bad UTF-8 must exit 1"
grep -q "line 2" "$T/err" || fail "no line number: $(cat "$T/err")"
printf 'ok\nok\n\xc3\n' | "$J" encode --model "$T/m" --doc >/dev/null 2>"$T/err"
[ $? -eq 1 ] || fail "encode: bad UTF-8 must exit 1"
grep -q "line 3" "$T/err" || fail "encode: no line number: $(cat "$T/err")"

# encode json: 32 vectors of 8 per query; documents keep their kept rows.
e=$(printf 'テスト\n東京\n' | "$J" encode --model "$T/m" --query) || fail "encode --query"
[ "$(echo "$e" | wc -l)" -eq 2 ] || fail "encode line count"
rows=$(echo "$e" | head -1 | grep -o '\[[^][]*\]' | wc -l)
[ "$rows" -eq 32 ] || fail "query rows: $rows"
e=$(printf '東京は日本の首都です！\n' | "$J" encode --model "$T/m" --doc) || fail "encode --doc"
rows=$(echo "$e" | grep -o '\[[^][]*\]' | wc -l)
[ "$rows" -eq 9 ] || fail "doc rows (10 tokens, '!' dropped): $rows"

# encode npy: 128-byte header + float32 data; the summary line has the shape.
s=$(printf 'テスト\n東京\n大阪\n' | "$J" encode --model "$T/m" --query --format npy --out "$T/q.npy") || fail "npy"
echo "$s" | grep -q '"shape":\[3,32,8\]' || fail "npy summary: $s"
[ "$(stat -c %s "$T/q.npy")" -eq $((128 + 3 * 32 * 8 * 4)) ] || fail "npy size"
head -c 6 "$T/q.npy" | grep -q 'NUMPY' || fail "npy magic"
s=$(printf 'テスト\n東京は日本の首都です！\n' | "$J" encode --model "$T/m" --doc --format npy --out "$T/d.npy") || fail "npy doc"
echo "$s" | grep -q '"doclens":\[4,9\]' || fail "doclens: $s"
[ "$(stat -c %s "$T/d.npy")" -eq $((128 + 13 * 8 * 4)) ] || fail "npy doc size"
"$J" encode --model "$T/m" --doc --format npy </dev/null 2>/dev/null
[ $? -eq 2 ] || fail "npy without --out must be a usage error"
echo "ok"
