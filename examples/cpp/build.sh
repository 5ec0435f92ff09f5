#!/usr/bin/env bash
# Build examples/cpp into examples/cpp/build/ (the binary: examples/cpp/build/cliplit-enhance).
# Needs the Debian packages listed in apt.txt:  sudo apt-get install -y $(cat examples/cpp/apt.txt)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cmake -S "$here" -B "$here/build" -DCMAKE_BUILD_TYPE=Release
cmake --build "$here/build" --parallel "$(nproc)"
