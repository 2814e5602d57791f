#!/usr/bin/env bash
# Make sure Node.js and npm are installed (the client, the example's frontend).
set -euo pipefail
if ! command -v npm >/dev/null 2>&1; then
  if [ "$(id -u)" = "0" ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null
  fi
fi
command -v npm >/dev/null 2>&1 || { echo "npm is required: install Node.js (apt install nodejs npm)" >&2; exit 1; }
