#!/usr/bin/env bash
# Keeps the engine under the product (DESIGN.md, Layers; docs/decisions.md): no file of the
# engine (src/queue, src/daemon, src/maintenance, src/db) names a crate module outside the
# engine. Every `crate::` path is checked, in code and comments alike, including each
# member of a grouped import (`use crate::{db, jobs}`, over several lines too), and
# `super::super::` may not climb out of an engine directory. Prints each offending path
# with its file and line; exits 1 if there is one. Run by .ci/run and by tests/layers.rs.
# Arguments, if any, replace the engine paths (tests/layers.rs checks the check this way).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

paths=("$@")
[[ ${#paths[@]} -gt 0 ]] || paths=(src/queue src/daemon src/maintenance src/db src/db.rs)

# Modules the engine may use: itself and the shared plumbing under it.
export GENQ_ENGINE_ALLOWED='queue|daemon|maintenance|db|metrics|telemetry|sync'

find "${paths[@]}" -name '*.rs' -print0 |
    xargs -0 perl -0777 -ne '
        BEGIN { $allowed = $ENV{GENQ_ENGINE_ALLOWED}; $bad = 0 }
        my $text = $_;
        while ($text =~ /crate::(\{(?:[^{}]++|(?1))*\}|\w+)|(super::super::)/g) {
            my ($path, $climb, $at) = ($1 // "", $2, $-[0]);
            my $line = 1 + (substr($text, 0, $at) =~ tr/\n//);
            my @names;
            if (defined $climb) {
                @names = ("super::super");
            } elsif ($path =~ /^\{(.*)\}$/s) {
                # Top-level members of the group: drop nested groups, split on commas.
                (my $members = $1) =~ s/(\{(?:[^{}]++|(?1))*\})//g;
                @names = map { /^\s*(\w+)/ ? $1 : () } split /,/, $members;
            } else {
                @names = ($path);
            }
            for my $name (@names) {
                next if $name =~ /^(?:$allowed)$/;
                my $shown = defined $climb ? $climb : "crate::$path";
                print STDERR "engine imports the product: $ARGV:$line: $shown\n";
                $bad = 1;
            }
        }
        END { exit $bad }
    ' || exit 1
echo "layers: the engine imports no product module"
