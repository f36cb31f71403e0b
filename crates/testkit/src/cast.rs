//! The reference cast of the default setup: who each principal is, as signed claims carry it.

/// A principal of the reference cast.
#[derive(Clone)]
pub struct Who {
    pub sub: &'static str,
    pub entity: &'static str,
    pub location: &'static str,
    pub clearance: &'static [&'static str],
    pub roles: &'static [&'static str],
}

impl Who {
    /// The flags of `sovereign token` that mint this principal's token.
    pub fn token_args(&self) -> Vec<String> {
        let mut args = vec![
            "--sub".to_string(),
            self.sub.to_string(),
            "--entity".to_string(),
            self.entity.to_string(),
            "--location".to_string(),
            self.location.to_string(),
        ];
        for clearance in self.clearance {
            args.extend(["--clearance".to_string(), clearance.to_string()]);
        }
        for role in self.roles {
            args.extend(["--role".to_string(), role.to_string()]);
        }
        args
    }
}

pub const VETTED_US: Who = Who {
    sub: "alice",
    entity: "usds",
    location: "US",
    clearance: &["us-data"],
    roles: &["engineer"],
};
pub const USDS_TRAVELLING_CN: Who = Who {
    sub: "bob",
    entity: "usds",
    location: "CN",
    clearance: &["us-data"],
    roles: &["engineer"],
};
pub const PARENT_CN: Who = Who {
    sub: "chen",
    entity: "parent",
    location: "CN",
    clearance: &[],
    roles: &["engineer"],
};
pub const PARENT_SG: Who = Who {
    sub: "siew",
    entity: "parent",
    location: "SG",
    clearance: &[],
    roles: &["engineer"],
};
pub const MONITOR: Who = Who {
    sub: "mona",
    entity: "monitor",
    location: "US",
    clearance: &[],
    roles: &["monitor"],
};

/// The global platform's egress consumer: it takes interoperable data out of the jurisdiction
/// (to Singapore; one located in a restricted country gets no US rows).
pub const EGRESS: Who = Who {
    sub: "globe",
    entity: "parent",
    location: "SG",
    clearance: &[],
    roles: &["egress"],
};

/// The egress consumer located in a restricted country: it gets no US rows.
pub const EGRESS_CN: Who = Who {
    location: "CN",
    ..EGRESS
};

/// A data subject (`u-1001`, the subject the scenarios register) asking for their own data.
pub const DATA_SUBJECT: Who = Who {
    sub: "u-1001",
    entity: "public",
    location: "US",
    clearance: &[],
    roles: &["data-subject"],
};

// The custodian's cast.
pub const APPROVER_1: Who = Who {
    sub: "carol",
    entity: "custodian",
    location: "US",
    clearance: &[],
    roles: &["custodian-approver"],
};
pub const APPROVER_2: Who = Who {
    sub: "dave",
    entity: "custodian",
    location: "US",
    clearance: &[],
    roles: &["custodian-approver"],
};
pub const BREAK_GLASS: Who = Who {
    sub: "frank",
    entity: "usds",
    location: "US",
    clearance: &["us-data"],
    roles: &["engineer", "break-glass"],
};
pub const OPERATOR: Who = Who {
    sub: "olga",
    entity: "custodian",
    location: "US",
    clearance: &[],
    roles: &["custodian-operator"],
};
