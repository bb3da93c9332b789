//! Which polkit action each D-Bus method needs: the one table of it.
//!
//! The end-to-end test `security_actions` compares this table with the live
//! introspection of the Manager and Job objects: a method added to the
//! interfaces without a row here fails that test.

/// copyd's polkit actions (polkit/org.example.copyd1.policy).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Copy or move as yourself, with your own rights.
    Copy,
    /// A job with the `privileged` option: runs as root.
    CopyPrivileged,
    /// Pause, resume, cancel (or otherwise steer) another user's job.
    ManageOtherJobs,
    /// Change the running service's settings (the global rate limit).
    Configure,
}

impl Action {
    pub const ALL: [Action; 4] = [
        Action::Copy,
        Action::CopyPrivileged,
        Action::ManageOtherJobs,
        Action::Configure,
    ];

    pub fn id(self) -> &'static str {
        match self {
            Action::Copy => "org.example.copyd1.copy",
            Action::CopyPrivileged => "org.example.copyd1.copy-privileged",
            Action::ManageOtherJobs => "org.example.copyd1.manage-other-jobs",
            Action::Configure => "org.example.copyd1.configure",
        }
    }
}

/// What a method requires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// Nothing: anyone the bus lets in (listing, reading properties).
    None,
    /// `copy`, or `copy-privileged` when the option `privileged` is true.
    Copy,
    /// Nothing for the job's owner; `manage-other-jobs` for anyone else.
    OwnerOr(Action),
    /// This action, whoever calls.
    Always(Action),
}

impl Rule {
    /// The action for a request; None when nothing is needed.
    pub fn action(self, privileged: bool, is_owner: bool) -> Option<Action> {
        match self {
            Rule::None => None,
            Rule::Copy if privileged => Some(Action::CopyPrivileged),
            Rule::Copy => Some(Action::Copy),
            Rule::OwnerOr(_) if is_owner => None,
            Rule::OwnerOr(action) => Some(action),
            Rule::Always(action) => Some(action),
        }
    }

    /// How the table shows it.
    pub fn describe(self) -> String {
        match self {
            Rule::None => "none".into(),
            Rule::Copy => format!(
                "{} ({} with privileged=true)",
                Action::Copy.id(),
                Action::CopyPrivileged.id()
            ),
            Rule::OwnerOr(action) => format!("none for the owner, else {}", action.id()),
            Rule::Always(action) => action.id().to_owned(),
        }
    }
}

pub const MANAGER_INTERFACE: &str = "org.example.Copyd1.Manager";
pub const JOB_INTERFACE: &str = "org.example.Copyd1.Job";

/// (interface, method, rule) for every method of copyd's interfaces.
/// Properties (Get, GetAll) need nothing.
pub const METHODS: &[(&str, &str, Rule)] = &[
    (MANAGER_INTERFACE, "Copy", Rule::Copy),
    (MANAGER_INTERFACE, "Move", Rule::Copy),
    (MANAGER_INTERFACE, "Plan", Rule::Copy),
    (MANAGER_INTERFACE, "RetryJob", Rule::Copy),
    (MANAGER_INTERFACE, "ListJobs", Rule::None),
    (MANAGER_INTERFACE, "GetJob", Rule::None),
    (MANAGER_INTERFACE, "GetHealth", Rule::None),
    (MANAGER_INTERFACE, "GetPerformance", Rule::None),
    (
        MANAGER_INTERFACE,
        "SetRateLimit",
        Rule::Always(Action::Configure),
    ),
    (MANAGER_INTERFACE, "Reload", Rule::Always(Action::Configure)),
    (
        JOB_INTERFACE,
        "Cancel",
        Rule::OwnerOr(Action::ManageOtherJobs),
    ),
    (
        JOB_INTERFACE,
        "Pause",
        Rule::OwnerOr(Action::ManageOtherJobs),
    ),
    (
        JOB_INTERFACE,
        "Resume",
        Rule::OwnerOr(Action::ManageOtherJobs),
    ),
    (
        JOB_INTERFACE,
        "SetRateLimit",
        Rule::OwnerOr(Action::ManageOtherJobs),
    ),
    (
        JOB_INTERFACE,
        "ResolveConflict",
        Rule::OwnerOr(Action::ManageOtherJobs),
    ),
];

/// The rule of `interface.method`. A method missing from the table is
/// refused with every request: it is a bug, and a closed door is the safe one.
pub fn rule(interface: &str, method: &str) -> Option<Rule> {
    METHODS
        .iter()
        .find(|(i, m, _)| *i == interface && *m == method)
        .map(|(_, _, rule)| *rule)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_answers() {
        assert_eq!(
            rule(MANAGER_INTERFACE, "Copy").unwrap().action(true, false),
            Some(Action::CopyPrivileged)
        );
        assert_eq!(
            rule(JOB_INTERFACE, "Cancel").unwrap().action(false, true),
            None
        );
        assert_eq!(
            rule(JOB_INTERFACE, "Cancel").unwrap().action(false, false),
            Some(Action::ManageOtherJobs)
        );
        assert_eq!(rule(MANAGER_INTERFACE, "Nope"), None);
    }
}
