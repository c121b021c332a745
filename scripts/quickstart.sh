#!/usr/bin/env bash
# The README's first command: installs what is missing (Debian 12, as root), builds mechlens and
# its examples, and runs the main job.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release
main_job=next_token
if [ -f examples/dec7/CMakeLists.txt ] && grep -q dec7_demo examples/dec7/CMakeLists.txt; then main_job=dec7_demo; fi
cmake --build build --target "$main_job"
exe=$(find build/examples -type f -name "$main_job" -perm -u+x | head -n 1)
echo "mechlens: running $exe $*" >&2
"$exe" "$@"
