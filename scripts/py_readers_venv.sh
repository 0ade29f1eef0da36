#!/usr/bin/env bash
# Installs the Python dataset readers that tests/plain_datasets.rs opens
# activation stores with (pandas, pyarrow, polars, DuckDB, Hugging Face
# datasets; pinned) into a virtualenv, once, and prints the path of its python.
#
#   export SAEPIPE_READERS_PYTHON=$(scripts/py_readers_venv.sh target/readers-venv)
set -euo pipefail

dir=${1:?usage: py_readers_venv.sh DIR}
pins=(pandas==3.1.1 pyarrow==26.0.1 polars==2.1.0 duckdb==2.0.0 datasets==5.2.0)
stamp="$dir/.saepipe-pins"

# Reinstalled when the pins change, so an old venv never passes for a new one.
if [ ! -x "$dir/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "${pins[*]}" ]; then
  echo "installing ${pins[*]} from PyPI into $dir (dataset readers for the plain-dataset tests)" >&2
  python3 -m venv "$dir"
  "$dir/bin/pip" install --quiet --disable-pip-version-check "${pins[@]}" >&2
  echo "${pins[*]}" >"$stamp"
fi
echo "$(cd "$dir" && pwd)/bin/python"
