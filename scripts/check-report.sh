#!/usr/bin/env bash
# Renders a kdet report headless in Chromium and checks it (issue #6): no console errors or
# failed loads, every chart (<svg>) and every drawn image (<img src="data:image/png...">)
# present in the rendered DOM, and a non-blank screenshot.
#
#   bash scripts/check-report.sh [REPORT.html] [SCREENSHOT.png]
#   (default: runs/demo/report.html; screenshot to a temporary file)
#
# Installs Debian's `chromium` with apt-get when it is missing (needs root or sudo).
set -euo pipefail
report=$(realpath "${1:-runs/demo/report.html}")
shot=${2:-$(mktemp --suffix=.png)}
[ -f "$report" ] || { echo "error: $report does not exist (run kdet demo or kdet report first)" >&2; exit 1; }
if ! command -v chromium > /dev/null; then
  echo "installing chromium (Debian package)"
  sudo_cmd=""; [ "$(id -u)" = 0 ] || sudo_cmd=sudo
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq chromium > /dev/null
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
flags=(--headless=new --no-sandbox --disable-gpu --hide-scrollbars --enable-logging=stderr --v=0)
timeout 120 chromium "${flags[@]}" --dump-dom "file://$report" > "$work/dom.html" 2> "$work/dom.err"
timeout 120 chromium "${flags[@]}" --window-size=1400,3000 --screenshot="$shot" "file://$report" \
  > /dev/null 2> "$work/shot.err"
python3 - "$work/dom.html" "$work/dom.err" "$work/shot.err" "$shot" "$report" <<'PY'
import re, struct, sys, zlib
dom, errs, shot, report = open(sys.argv[1]).read(), open(sys.argv[2]).read() + open(sys.argv[3]).read(), sys.argv[4], sys.argv[5]
source = open(report).read()
problems = []
# Console messages and failed loads (Chromium prints console output as "CONSOLE(...)" or
# ":INFO:CONSOLE" lines; dbus noise of a container is not the page's).
for line in errs.splitlines():
    if "CONSOLE" in line or "Failed to load" in line or "net::ERR" in line:
        problems.append("browser: " + line.strip())
svg_src, svg_dom = source.count("<svg"), dom.count("<svg")
img_src = len(re.findall(r'src="data:image/png;base64,', source))
img_dom = len(re.findall(r'src="data:image/png;base64,', dom))
if svg_dom == 0:
    problems.append("no chart (<svg>) in the rendered page")
if svg_dom != svg_src:
    problems.append(f"{svg_src} charts in the file, {svg_dom} rendered")
if img_dom != img_src:
    problems.append(f"{img_src} images in the file, {img_dom} rendered")
if img_src == 0:
    problems.append("no drawn image in the page")
if re.search(r'(src|href)="https?://', source):
    problems.append("the page loads something from the network")
# The screenshot decodes as a PNG and is not one flat colour.
data = open(shot, "rb").read()
if data[:8] != b"\x89PNG\r\n\x1a\n":
    problems.append("the screenshot is not a PNG")
else:
    w, h = struct.unpack(">II", data[16:24])
    idat = b"".join(data[i + 8:i + 8 + struct.unpack(">I", data[i:i + 4])[0]]
                    for i in [m.start() - 4 for m in re.finditer(b"IDAT", data)])
    raw = zlib.decompress(idat)
    if len(set(raw[: min(len(raw), 2_000_000)])) < 16:
        problems.append("the screenshot is (nearly) blank")
    print(f"screenshot {shot}: {w}x{h}")
print(f"{report}: {svg_dom} charts and {img_dom} images rendered")
if problems:
    print("problems:\n  " + "\n  ".join(problems))
    sys.exit(1)
print("ok")
PY
