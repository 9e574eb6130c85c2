//! Every Redis key and channel name of the program, built in one place from the deployment's
//! key prefix (so tests and several deployments can share one Redis).

/// Builds the Redis keys of one deployment.
#[derive(Debug, Clone)]
pub struct KeySpace {
    prefix: String,
}

impl KeySpace {
    pub fn new(prefix: &str) -> Self {
        KeySpace {
            prefix: prefix.to_string(),
        }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    fn key(&self, rest: std::fmt::Arguments<'_>) -> String {
        format!("{}{}", self.prefix, rest)
    }

    /// Probe record used by `check`.
    pub fn probe(&self, id: &str) -> String {
        self.key(format_args!("probe:{id}"))
    }
}

impl KeySpace {
    /// Operator account (redis mode).
    pub fn admin_user(&self, username: &str) -> String {
        self.key(format_args!("admin:user:{username}"))
    }
}
