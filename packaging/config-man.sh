#!/bin/sh
# Make copyd.conf(5) from the documented sample configuration:
#   packaging/config-man.sh packaging/config.toml VERSION > copyd.conf.5
# The sample is the one place the keys are explained (it is installed as
# /etc/copyd/config.toml), so the page is made from it, not written twice.
# Its layout: a header of comments, then blocks separated by blank lines,
# each some "# prose" lines and then "#key = default" lines or a
# "#[section]" line. tests/tests/packaging.rs checks that every field of
# copyd's Config appears in the page.
set -eu
sample=$1 version=$2
awk -v version="$version" '
function esc(s) {
    gsub(/\\/, "\\e", s)
    gsub(/-/, "\\-", s)
    if (s ~ /^[.\047]/) s = "\\&" s
    return s
}
function flush(   i) {
    if (nkeys == 0 && section == "" && nprose == 0) return
    if (section != "") {
        print ".SH \"SECTION [" section "]\""
        for (i = 1; i <= nprose; i++) print esc(prose[i])
        # Keys right under the section line: listed, the prose above says
        # what they are.
        for (i = 1; i <= nkeys; i++) {
            print (i == 1 ? ".TP" : ".TQ")
            print "\\fB" esc(keyname[i]) "\\fR = " esc(keyval[i])
        }
        if (nkeys > 0) print "As described above."
    } else if (nkeys > 0) {
        for (i = 1; i <= nkeys; i++) {
            print (i == 1 ? ".TP" : ".TQ")
            print "\\fB" esc(keyname[i]) "\\fR = " esc(keyval[i])
        }
        for (i = 1; i <= nprose; i++) print esc(prose[i])
    } else {
        for (i = 1; i <= nprose; i++) print esc(prose[i])
        print ".PP"
    }
    nkeys = 0; nprose = 0; section = ""
}
BEGIN {
    print ".TH COPYD.CONF 5 \"\" \"copyd " version "\" \"File Formats\""
    print ".SH NAME"
    print "copyd.conf \\- configuration of the copyd file copy service"
    print ".SH SYNOPSIS"
    print "/etc/copyd/config.toml"
    print ".SH DESCRIPTION"
    print "copyd(8) reads this TOML file when it starts (or the file given"
    print "with \\fB\\-\\-config\\fR). Every key is optional; the value shown is"
    print "the built-in default unless the text says it is an example."
    print ".SH \"TOP-LEVEL KEYS\""
    header = 1
}
/^$/ {
    if (header) { header = 0; nprose = 0; next }
    flush(); next
}
header { next }   # the header speaks of "this file" as installed
/^#\[[a-z_]+\]$/ { section = substr($0, 3, length($0) - 3); next }
/^#[a-z_]+ = / {
    nkeys++
    line = substr($0, 2)
    keyname[nkeys] = substr(line, 1, index(line, " = ") - 1)
    keyval[nkeys] = substr(line, index(line, " = ") + 3)
    next
}
/^#/ { t = $0; sub(/^# ?/, "", t); prose[++nprose] = t; next }
END {
    flush()
    print ".SH FILES"
    print ".TP"
    print "/etc/copyd/config.toml"
    print "The configuration (a conffile: upgrades keep your changes)."
    print ".SH SEE ALSO"
    print "copyd(8), copyctl(1)"
}
' "$sample"
