# copyctl: job ids, for the subcommands that take one, come from
# `copyctl list` (clap's static script cannot know them).
_copyctl_job_ids() {
    local -a ids
    ids=(${(f)"$(copyctl --json list 2>/dev/null | grep -o '"id": *"[^"]*"' | sed 's/.*"\([^"]*\)"$/\1/')"})
    compadd -a ids
}
