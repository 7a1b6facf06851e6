#!/usr/bin/env bash
# A goop executor in Bash (plus awk, sed and wc), written by hand against the protocol.
#
# It reads job lines until EOF and answers each in turn, so it serves oneshot mode (one line,
# then EOF) and, one job at a time, daemon mode too (capacity 1; a cancel can only arrive after
# the job it names has answered, so cancel lines are ignored).
#
# Job types:
#   echo        the payload back, byte for byte
#   word-count  {"text":"..."} -> {"lines":L,"words":W,"bytes":B}
set -u
export LC_ALL=C

VERSION="1.0.0"

# json_get JSON KEY: prints the raw value of KEY in the top-level object JSON, or fails when the
# key is absent. A small scanner that tracks strings, escapes and nesting, so commas and braces
# inside strings or nested values do not confuse it.
json_get() {
  printf '%s\n' "$1" | awk -v want="$2" '
    function trim(t) { sub(/^[ \t\r]+/, "", t); sub(/[ \t\r]+$/, "", t); return t }
    {
      s = $0; n = length(s); depth = 0; instr = 0; esc = 0; phase = 0
      for (i = 1; i <= n; i++) {
        c = substr(s, i, 1)
        if (instr) {
          if (esc) esc = 0
          else if (c == "\\") esc = 1
          else if (c == "\"") {
            instr = 0
            if (depth == 1 && phase == 0) { key = substr(s, kstart, i - kstart); phase = 1 }
          }
          continue
        }
        if (c == "\"") { instr = 1; if (depth == 1 && phase == 0) kstart = i + 1; continue }
        if (depth == 1 && phase == 1 && c == ":") { phase = 2; vstart = i + 1; continue }
        if (c == "{" || c == "[") { depth++; continue }
        if ((c == "}" || c == "]") && depth > 1) { depth--; continue }
        if ((c == "," || c == "}") && depth == 1) {
          if (phase == 2 && key == want) { print trim(substr(s, vstart, i - vstart)); found = 1; exit }
          phase = 0
          if (c == "}") depth = 0
        }
      }
    }
    END { exit found ? 0 : 1 }'
}

# json_unstring JSON_STRING: prints the text of a JSON string literal (escapes decoded, \uXXXX
# written as UTF-8), or fails when the value is not a string.
json_unstring() {
  printf '%s\n' "$1" | awk '
    function utf8(cp) {
      if (cp < 128) return sprintf("%c", cp)
      if (cp < 2048) return sprintf("%c%c", 192 + int(cp / 64), 128 + cp % 64)
      if (cp < 65536) return sprintf("%c%c%c", 224 + int(cp / 4096), 128 + int(cp / 64) % 64, 128 + cp % 64)
      return sprintf("%c%c%c%c", 240 + int(cp / 262144), 128 + int(cp / 4096) % 64, 128 + int(cp / 64) % 64, 128 + cp % 64)
    }
    function hex(h,   v, k) {
      v = 0
      for (k = 1; k <= 4; k++) v = v * 16 + index("0123456789abcdef", tolower(substr(h, k, 1))) - 1
      return v
    }
    {
      s = $0; n = length(s)
      if (substr(s, 1, 1) != "\"" || substr(s, n, 1) != "\"") exit 1
      out = ""
      for (i = 2; i < n; i++) {
        c = substr(s, i, 1)
        if (c != "\\") { out = out c; continue }
        i++; c = substr(s, i, 1)
        if (c == "n") out = out "\n"
        else if (c == "t") out = out "\t"
        else if (c == "r") out = out "\r"
        else if (c == "b") out = out "\b"
        else if (c == "f") out = out "\f"
        else if (c == "u") {
          cp = hex(substr(s, i + 1, 4)); i += 4
          if (cp >= 55296 && cp < 56320 && substr(s, i + 1, 2) == "\\u") {
            lo = hex(substr(s, i + 3, 4)); i += 6
            cp = 65536 + (cp - 55296) * 1024 + (lo - 56320)
          }
          out = out utf8(cp)
        }
        else out = out c
      }
      printf "%s", out
    }'
}

# json_string TEXT: prints TEXT as a JSON string literal.
json_string() {
  printf '%s' "$1" | awk '
    BEGIN { ORS = "" }
    {
      if (NR > 1) out = out "\\n"
      line = $0
      gsub(/\\/, "\\\\", line); gsub(/"/, "\\\"", line); gsub(/\t/, "\\t", line); gsub(/\r/, "\\r", line)
      out = out line
    }
    END { print "\"" out "\"" }'
}

reply_error() { # job_id_json message
  printf '{"job_id":%s,"status":"error","error":%s}\n' "$1" "$(json_string "$2")"
}

handle() {
  local line=$1 id kind payload text
  [[ -z ${line//[[:space:]]/} ]] && return
  if ! id=$(json_get "$line" job_id) || [[ $id != \"* ]]; then
    printf '{"status":"log","msg":"input line has no job_id"}\n'
    return
  fi
  kind=$(json_get "$line" type) || kind='null'
  case $kind in
    '"__check__"')
      printf '{"job_id":%s,"status":"done","result":{"types":["echo","word-count"],"capacity":1,"version":"%s"}}\n' "$id" "$VERSION"
      ;;
    '"__cancel__"') ;;
    '"echo"')
      payload=$(json_get "$line" payload) || payload='null'
      printf '{"job_id":%s,"status":"done","result":%s}\n' "$id" "$payload"
      ;;
    '"word-count"')
      payload=$(json_get "$line" payload) || payload='null'
      if ! text=$(json_get "$payload" text) || ! text=$(json_unstring "$text"); then
        reply_error "$id" 'payload needs a string field "text"'
        return
      fi
      printf '{"job_id":%s,"status":"progress","pct":50,"msg":"counting"}\n' "$id"
      local lines words bytes
      read -r lines words < <(printf '%s' "$text" | awk '{ w += NF } END { print NR, w + 0 }')
      bytes=$(printf '%s' "$text" | wc -c)
      printf '{"job_id":%s,"status":"done","result":{"lines":%d,"words":%d,"bytes":%d}}\n' \
        "$id" "$lines" "$words" "$bytes"
      ;;
    *)
      reply_error "$id" "unsupported job type $kind"
      ;;
  esac
}

while IFS= read -r line || [[ -n $line ]]; do
  handle "$line"
done
exit 0
