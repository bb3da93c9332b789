
# copyctl: job ids, for the subcommands that take one, come from
# `copyctl list` (clap's static script cannot know them).
function __copyctl_job_ids
    copyctl --json list 2>/dev/null | string match -r -a -g '"id": *"([^"]*)"'
end
complete -c copyctl -n '__fish_seen_subcommand_from status watch retry cancel pause resume set-rate' -f -a '(__copyctl_job_ids)'
