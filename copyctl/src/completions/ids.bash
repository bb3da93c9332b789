
# copyctl: appended to clap's generated completion. Job ids, for the
# subcommands that take one, come from `copyctl list` (clap's static script
# cannot know them); everything else is clap's.
_copyctl_job_ids() {
    copyctl --json list 2>/dev/null | grep -o '"id": *"[^"]*"' | sed 's/.*"\([^"]*\)"$/\1/'
}
_copyctl_with_ids() {
    local cur=${COMP_WORDS[COMP_CWORD]}
    if [ "$COMP_CWORD" -ge 2 ]; then
        local i sub=""
        for ((i = 1; i < COMP_CWORD; i++)); do
            case ${COMP_WORDS[i]} in
            -*) ;;
            *) sub=${COMP_WORDS[i]}; break ;;
            esac
        done
        if [ "$i" -eq $((COMP_CWORD - 1)) ]; then
            case $sub in
            status|watch|retry|cancel|pause|resume|set-rate)
                COMPREPLY=($(compgen -W "$(_copyctl_job_ids)" -- "$cur"))
                return 0 ;;
            esac
        fi
    fi
    _copyctl "$@"
}
complete -F _copyctl_with_ids -o bashdefault -o default copyctl
