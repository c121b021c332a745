#!/usr/bin/env bash
# The documentation is self-contained: usage  check_no_outside_refs.sh <source dir>
#
#  1. README.md, docs/, include/, examples/, tests/ (this script excepted), scripts/ and
#     benchmarks/ cite no file that lives outside the repository (the project's working notes:
#     DESIGN.md, research-context.md, STYLE.md, anything under ../shared).
#  2. Every relative link `](path)` in README.md and docs/*.md names a file that exists.
#  3. The hook-point table of docs/design.md lists exactly the hook points that
#     include/mechlens/models/ declares.
# Prints each problem and exits 1 if there is any.
set -u
root=${1:?usage: check_no_outside_refs.sh <source dir>}
cd "$root" || { echo "check_no_outside_refs: cannot enter '$root'"; exit 2; }
self=tests/docs/check_no_outside_refs.sh
fail=0

# 1. References to files outside the repository.
paths=()
for p in README.md docs include examples tests scripts benchmarks; do [ -e "$p" ] && paths+=("$p"); done
hits=$(grep -rnI -e 'DESIGN\.md' -e 'research-context\.md' -e 'STYLE\.md' -e '\.\./shared' "${paths[@]}" |
       grep -v "^$self:" || true)
if [ -n "$hits" ]; then
  echo "References to files outside the repository (point them at docs/ instead):"
  echo "$hits" | sed 's/^/  /'
  fail=1
fi

# 2. Relative links in README.md and docs/*.md.
for f in README.md docs/*.md; do
  [ -f "$f" ] || continue
  dir=$(dirname "$f")
  # ](target) with no space inside (code such as a lambda's `[&](const T& x)` has one);
  # skip URLs, mail links and in-page anchors.
  while IFS=: read -r line target; do
    case "$target" in
      http://*|https://*|mailto:*|'#'*|'') continue ;;
    esac
    file=${target%%#*}
    if [ ! -e "$dir/$file" ]; then
      echo "$f:$line: link to '$target', but '$dir/$file' does not exist"
      fail=1
    fi
  done < <(grep -no '](\([^) ]*\))' "$f" | sed 's/^\([0-9]*\):](\(.*\))$/\1:\2/')
done

# 3. docs/design.md's hook table against the hook points the models declare.
if [ -f docs/design.md ]; then
  documented=$(grep -o '^| `[^`]*` | `\[' docs/design.md | sed 's/^| `\([^`]*\)`.*/\1/' |
               sed 's/^blocks\.{L}\.attn\./attn./; s/^blocks\.{L}\./block./' | sort -u)
  # add_point(p + "hook_q", ...) in attention.hpp has p = "blocks.L.attn."; decoder_layer.hpp
  # names its points add_point(hook_name(layer, "hook_resid_pre"), ...); model.hpp in full.
  declared=$( (grep -ho 'add_point(p + "[^"]*"' include/mechlens/models/attention.hpp |
                 sed 's/.*"\(.*\)"/attn.\1/'
               grep -ho -e 'add_point(p + "[^"]*"' -e 'add_point(hook_name(layer, "[^"]*"' \
                    include/mechlens/models/decoder_layer.hpp include/mechlens/models/mlp.hpp |
                 sed 's/.*"\(.*\)"/block.\1/'
               grep -ho 'add_point("[^"]*"' include/mechlens/models/*.hpp | sed 's/.*"\(.*\)"/\1/'
               other=$(grep -l 'add_point(' include/mechlens/models/*.hpp |
                       grep -v -e '/attention\.hpp$' -e '/decoder_layer\.hpp$' -e '/mlp\.hpp$' -e '/model\.hpp$')
               [ -n "$other" ] && echo "UNCHECKED:$other") | sort -u)
  if [ -z "$documented" ]; then
    echo "docs/design.md: no hook-point table found (rows '| \`name\` | \`[shape]\` | ...')"
    fail=1
  fi
  missing=$(comm -13 <(echo "$documented") <(echo "$declared"))
  extra=$(comm -23 <(echo "$documented") <(echo "$declared"))
  if [ -n "$missing" ]; then
    echo "Hook points the models declare but docs/design.md's table omits (attn. = blocks.{L}.attn., block. = blocks.{L}.):"
    echo "$missing" | sed 's/^/  /'
    fail=1
  fi
  if [ -n "$extra" ]; then
    echo "Hook points in docs/design.md's table that include/mechlens/models/ does not declare:"
    echo "$extra" | sed 's/^/  /'
    fail=1
  fi
fi

if [ "$fail" = 0 ]; then echo "docs_self_contained: ok"; fi
exit "$fail"
