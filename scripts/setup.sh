#!/usr/bin/env bash
# Idempotent provisioning for a fresh Debian/Ubuntu machine: system packages (as root),
# the virtualenv with pinned dependencies, and WordNet 3.0 laid out as an NLTK data directory.
# Run through `make setup`; every step is skipped when already done.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${VENV:-.venv}
CACHE=${CACHE:-build/cache}
PYTHON=${PYTHON:-python3}
# Debian packages: Java for Spark, WordNet 3.0, the openclipart demo corpus, FFCV's build deps.
# Node.js and npm for Azurite (the Azure storage emulator of the tests).
SYSTEM_PACKAGES=(openjdk-17-jre-headless wordnet-base wordnet-sense-index openclipart-png openclipart-svg
                 pkg-config libopencv-dev libturbojpeg0-dev nodejs npm)

say() { printf '[setup] %s\n' "$*"; }
die() { printf '[setup] ERROR: %s\n' "$*" >&2; exit 1; }

java_ok() {
  command -v java >/dev/null 2>&1 || return 1
  local v; v=$(java -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -1)
  [ -n "$v" ] && [ "$v" -ge 17 ]
}

missing=()
for p in "${SYSTEM_PACKAGES[@]}"; do
  if [ "$p" = openjdk-17-jre-headless ] && java_ok; then continue; fi
  if [ "$p" = npm ] && command -v npm >/dev/null 2>&1; then continue; fi  # nodejs from NodeSource bundles npm
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  command -v apt-get >/dev/null 2>&1 || die "missing system packages (${missing[*]}) and no apt-get: install them by hand"
  if [ "$(id -u)" -ne 0 ]; then
    die "missing system packages: ${missing[*]}. Run 'sudo make setup' once, or: sudo apt-get install -y ${missing[*]}"
  fi
  say "installing system packages: ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
java_ok || die "Spark needs Java 17 or newer on PATH (java -version)"

# Virtualenv: reinstalled only when pyproject.toml changes.
stamp="$VENV/.installed"
if [ ! -x "$VENV/bin/python" ]; then
  say "creating virtualenv $VENV"
  "$PYTHON" -m venv "$VENV"
fi
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  say "installing Python dependencies (torch and torchvision are large: a few minutes)"
  "$VENV/bin/pip" install -q --upgrade pip >/dev/null 2>&1 || true
  "$VENV/bin/pip" install -q -e ".[dev]"
  touch "$stamp"
fi

# Azurite, Azure's storage emulator (npm), for the image reader's az:// tests on loopback.
AZURITE_VERSION=3.35.0
TOOLS=build/tools
if ! grep -qs "\"version\": \"$AZURITE_VERSION\"" "$TOOLS/node_modules/azurite/package.json" \
    || [ ! -x "$TOOLS/node_modules/.bin/azurite-blob" ]; then
  command -v npm >/dev/null 2>&1 || die "npm not found (Debian packages nodejs and npm): needed for Azurite"
  say "installing Azurite $AZURITE_VERSION (npm) in $TOOLS"
  mkdir -p "$TOOLS"
  npm install --prefix "$TOOLS" --no-audit --no-fund --loglevel=error "azurite@$AZURITE_VERSION" >/dev/null
fi

# WordNet 3.0 from Debian, as an NLTK corpus directory (+ the lexnames table Debian lacks),
# and a zip of it that jobs ship to Spark executors.
WN_SRC=/usr/share/wordnet
WN_DIR="$CACHE/nltk_data/corpora/wordnet"
if [ ! -f "$WN_DIR/.complete" ]; then
  [ -f "$WN_SRC/data.noun" ] || die "WordNet files not found in $WN_SRC (package wordnet-base)"
  [ -f "$WN_SRC/index.sense" ] || die "index.sense not found in $WN_SRC (package wordnet-sense-index)"
  say "laying out WordNet 3.0 in $WN_DIR"
  rm -rf "$WN_DIR.tmp" && mkdir -p "$WN_DIR.tmp"
  cp "$WN_SRC"/{data,index}.{noun,verb,adj,adv} "$WN_SRC"/{noun,verb,adj,adv}.exc "$WN_SRC"/index.sense \
     "$WN_SRC"/cntlist.rev "$WN_DIR.tmp"/
  cp pipeline/data/wordnet_lexnames "$WN_DIR.tmp/lexnames"
  touch "$WN_DIR.tmp/.complete"
  rm -rf "$WN_DIR" && mv "$WN_DIR.tmp" "$WN_DIR"
fi
if [ ! -f "$CACHE/wordnet.zip" ]; then
  "$VENV/bin/python" -m pipeline.wordnet zip_from="$WN_DIR" zip_to="$CACHE/wordnet.zip"
fi
"$VENV/bin/python" -m pipeline.wordnet check="$WN_DIR"
say "ok"
