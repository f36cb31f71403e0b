//! Who × what → expected decision under the default policy set (reference scenario, restricted
//! countries CN, RU, IR, KP). Each expectation follows from the promise a policy encodes, not
//! from running the engine.

use policy::{AccessRequest, Action, Context, DEFAULT_SCHEMA, PolicyEngine, Principal, Resource};

/// principal, action, subject jurisdiction, field class ("-" for subjects), purpose given?,
/// expected outcome, expected determining policy ids (comma-separated, "-" for none).
const TABLE: &str = "
usds-vetted     register US  -             purpose  allow permit-usds-vetted-subjects
usds-vetted     register US  -             none     allow permit-usds-vetted-subjects
usds-vetted     list     US  -             purpose  allow permit-usds-vetted-subjects
usds-vetted     list     US  -             none     allow permit-usds-vetted-subjects
usds-vetted     read     US  protected     purpose  allow permit-usds-vetted-data
usds-vetted     read     US  protected     none     deny  -
usds-vetted     read     US  interoperable purpose  allow permit-usds-vetted-data
usds-vetted     read     US  interoperable none     deny  -
usds-vetted     write    US  protected     purpose  allow permit-usds-vetted-data
usds-vetted     write    US  protected     none     deny  -
usds-vetted     write    US  interoperable purpose  allow permit-usds-vetted-data
usds-vetted     write    US  interoperable none     deny  -
usds-vetted     delete   US  protected     purpose  allow permit-usds-vetted-data
usds-vetted     delete   US  protected     none     deny  -
usds-vetted     delete   US  interoperable purpose  allow permit-usds-vetted-data
usds-vetted     delete   US  interoperable none     deny  -
usds-vetted     register SG  -             purpose  deny  -
usds-vetted     register SG  -             none     deny  -
usds-vetted     list     SG  -             purpose  deny  -
usds-vetted     list     SG  -             none     deny  -
usds-vetted     read     SG  protected     purpose  deny  -
usds-vetted     read     SG  protected     none     deny  -
usds-vetted     read     SG  interoperable purpose  deny  -
usds-vetted     read     SG  interoperable none     deny  -
usds-vetted     write    SG  protected     purpose  deny  -
usds-vetted     write    SG  protected     none     deny  -
usds-vetted     write    SG  interoperable purpose  deny  -
usds-vetted     write    SG  interoperable none     deny  -
usds-vetted     delete   SG  protected     purpose  deny  -
usds-vetted     delete   SG  protected     none     deny  -
usds-vetted     delete   SG  interoperable purpose  deny  -
usds-vetted     delete   SG  interoperable none     deny  -
usds-uncleared  register US  -             purpose  deny  -
usds-uncleared  register US  -             none     deny  -
usds-uncleared  list     US  -             purpose  deny  -
usds-uncleared  list     US  -             none     deny  -
usds-uncleared  read     US  protected     purpose  deny  -
usds-uncleared  read     US  protected     none     deny  -
usds-uncleared  read     US  interoperable purpose  deny  -
usds-uncleared  read     US  interoperable none     deny  -
usds-uncleared  write    US  protected     purpose  deny  -
usds-uncleared  write    US  protected     none     deny  -
usds-uncleared  write    US  interoperable purpose  deny  -
usds-uncleared  write    US  interoperable none     deny  -
usds-uncleared  delete   US  protected     purpose  deny  -
usds-uncleared  delete   US  protected     none     deny  -
usds-uncleared  delete   US  interoperable purpose  deny  -
usds-uncleared  delete   US  interoperable none     deny  -
usds-uncleared  register SG  -             purpose  deny  -
usds-uncleared  register SG  -             none     deny  -
usds-uncleared  list     SG  -             purpose  deny  -
usds-uncleared  list     SG  -             none     deny  -
usds-uncleared  read     SG  protected     purpose  deny  -
usds-uncleared  read     SG  protected     none     deny  -
usds-uncleared  read     SG  interoperable purpose  deny  -
usds-uncleared  read     SG  interoperable none     deny  -
usds-uncleared  write    SG  protected     purpose  deny  -
usds-uncleared  write    SG  protected     none     deny  -
usds-uncleared  write    SG  interoperable purpose  deny  -
usds-uncleared  write    SG  interoperable none     deny  -
usds-uncleared  delete   SG  protected     purpose  deny  -
usds-uncleared  delete   SG  protected     none     deny  -
usds-uncleared  delete   SG  interoperable purpose  deny  -
usds-uncleared  delete   SG  interoperable none     deny  -
usds-in-cn      register US  -             purpose  deny  forbid-restricted-location
usds-in-cn      register US  -             none     deny  forbid-restricted-location
usds-in-cn      list     US  -             purpose  deny  forbid-restricted-location
usds-in-cn      list     US  -             none     deny  forbid-restricted-location
usds-in-cn      read     US  protected     purpose  deny  forbid-restricted-location
usds-in-cn      read     US  protected     none     deny  forbid-restricted-location
usds-in-cn      read     US  interoperable purpose  deny  forbid-restricted-location
usds-in-cn      read     US  interoperable none     deny  forbid-restricted-location
usds-in-cn      write    US  protected     purpose  deny  forbid-restricted-location
usds-in-cn      write    US  protected     none     deny  forbid-restricted-location
usds-in-cn      write    US  interoperable purpose  deny  forbid-restricted-location
usds-in-cn      write    US  interoperable none     deny  forbid-restricted-location
usds-in-cn      delete   US  protected     purpose  deny  forbid-restricted-location
usds-in-cn      delete   US  protected     none     deny  forbid-restricted-location
usds-in-cn      delete   US  interoperable purpose  deny  forbid-restricted-location
usds-in-cn      delete   US  interoperable none     deny  forbid-restricted-location
usds-in-cn      register SG  -             purpose  deny  -
usds-in-cn      register SG  -             none     deny  -
usds-in-cn      list     SG  -             purpose  deny  -
usds-in-cn      list     SG  -             none     deny  -
usds-in-cn      read     SG  protected     purpose  deny  -
usds-in-cn      read     SG  protected     none     deny  -
usds-in-cn      read     SG  interoperable purpose  deny  -
usds-in-cn      read     SG  interoperable none     deny  -
usds-in-cn      write    SG  protected     purpose  deny  -
usds-in-cn      write    SG  protected     none     deny  -
usds-in-cn      write    SG  interoperable purpose  deny  -
usds-in-cn      write    SG  interoperable none     deny  -
usds-in-cn      delete   SG  protected     purpose  deny  -
usds-in-cn      delete   SG  protected     none     deny  -
usds-in-cn      delete   SG  interoperable purpose  deny  -
usds-in-cn      delete   SG  interoperable none     deny  -
parent-in-cn    register US  -             purpose  deny  forbid-restricted-location
parent-in-cn    register US  -             none     deny  forbid-restricted-location
parent-in-cn    list     US  -             purpose  deny  forbid-restricted-location
parent-in-cn    list     US  -             none     deny  forbid-restricted-location
parent-in-cn    read     US  protected     purpose  deny  forbid-restricted-entity-protected,forbid-restricted-location
parent-in-cn    read     US  protected     none     deny  forbid-restricted-entity-protected,forbid-restricted-location
parent-in-cn    read     US  interoperable purpose  deny  forbid-restricted-location
parent-in-cn    read     US  interoperable none     deny  forbid-restricted-location
parent-in-cn    write    US  protected     purpose  deny  forbid-restricted-entity-protected,forbid-restricted-location
parent-in-cn    write    US  protected     none     deny  forbid-restricted-entity-protected,forbid-restricted-location
parent-in-cn    write    US  interoperable purpose  deny  forbid-restricted-location
parent-in-cn    write    US  interoperable none     deny  forbid-restricted-location
parent-in-cn    delete   US  protected     purpose  deny  forbid-restricted-entity-protected,forbid-restricted-location
parent-in-cn    delete   US  protected     none     deny  forbid-restricted-entity-protected,forbid-restricted-location
parent-in-cn    delete   US  interoperable purpose  deny  forbid-restricted-location
parent-in-cn    delete   US  interoperable none     deny  forbid-restricted-location
parent-in-cn    register SG  -             purpose  allow permit-parent-non-us-subjects
parent-in-cn    register SG  -             none     allow permit-parent-non-us-subjects
parent-in-cn    list     SG  -             purpose  allow permit-parent-non-us-subjects
parent-in-cn    list     SG  -             none     allow permit-parent-non-us-subjects
parent-in-cn    read     SG  protected     purpose  allow permit-parent-non-us-data
parent-in-cn    read     SG  protected     none     deny  -
parent-in-cn    read     SG  interoperable purpose  allow permit-parent-interoperable-read,permit-parent-non-us-data
parent-in-cn    read     SG  interoperable none     allow permit-parent-interoperable-read
parent-in-cn    write    SG  protected     purpose  allow permit-parent-non-us-data
parent-in-cn    write    SG  protected     none     deny  -
parent-in-cn    write    SG  interoperable purpose  allow permit-parent-non-us-data
parent-in-cn    write    SG  interoperable none     deny  -
parent-in-cn    delete   SG  protected     purpose  allow permit-parent-non-us-data
parent-in-cn    delete   SG  protected     none     deny  -
parent-in-cn    delete   SG  interoperable purpose  allow permit-parent-non-us-data
parent-in-cn    delete   SG  interoperable none     deny  -
parent-in-sg    register US  -             purpose  deny  -
parent-in-sg    register US  -             none     deny  -
parent-in-sg    list     US  -             purpose  deny  -
parent-in-sg    list     US  -             none     deny  -
parent-in-sg    read     US  protected     purpose  deny  forbid-restricted-entity-protected
parent-in-sg    read     US  protected     none     deny  forbid-restricted-entity-protected
parent-in-sg    read     US  interoperable purpose  allow permit-parent-interoperable-read
parent-in-sg    read     US  interoperable none     allow permit-parent-interoperable-read
parent-in-sg    write    US  protected     purpose  deny  forbid-restricted-entity-protected
parent-in-sg    write    US  protected     none     deny  forbid-restricted-entity-protected
parent-in-sg    write    US  interoperable purpose  deny  -
parent-in-sg    write    US  interoperable none     deny  -
parent-in-sg    delete   US  protected     purpose  deny  forbid-restricted-entity-protected
parent-in-sg    delete   US  protected     none     deny  forbid-restricted-entity-protected
parent-in-sg    delete   US  interoperable purpose  deny  -
parent-in-sg    delete   US  interoperable none     deny  -
parent-in-sg    register SG  -             purpose  allow permit-parent-non-us-subjects
parent-in-sg    register SG  -             none     allow permit-parent-non-us-subjects
parent-in-sg    list     SG  -             purpose  allow permit-parent-non-us-subjects
parent-in-sg    list     SG  -             none     allow permit-parent-non-us-subjects
parent-in-sg    read     SG  protected     purpose  allow permit-parent-non-us-data
parent-in-sg    read     SG  protected     none     deny  -
parent-in-sg    read     SG  interoperable purpose  allow permit-parent-interoperable-read,permit-parent-non-us-data
parent-in-sg    read     SG  interoperable none     allow permit-parent-interoperable-read
parent-in-sg    write    SG  protected     purpose  allow permit-parent-non-us-data
parent-in-sg    write    SG  protected     none     deny  -
parent-in-sg    write    SG  interoperable purpose  allow permit-parent-non-us-data
parent-in-sg    write    SG  interoperable none     deny  -
parent-in-sg    delete   SG  protected     purpose  allow permit-parent-non-us-data
parent-in-sg    delete   SG  protected     none     deny  -
parent-in-sg    delete   SG  interoperable purpose  allow permit-parent-non-us-data
parent-in-sg    delete   SG  interoperable none     deny  -
parent-in-us    register US  -             purpose  deny  -
parent-in-us    register US  -             none     deny  -
parent-in-us    list     US  -             purpose  deny  -
parent-in-us    list     US  -             none     deny  -
parent-in-us    read     US  protected     purpose  deny  forbid-restricted-entity-protected
parent-in-us    read     US  protected     none     deny  forbid-restricted-entity-protected
parent-in-us    read     US  interoperable purpose  allow permit-parent-interoperable-read
parent-in-us    read     US  interoperable none     allow permit-parent-interoperable-read
parent-in-us    write    US  protected     purpose  deny  forbid-restricted-entity-protected
parent-in-us    write    US  protected     none     deny  forbid-restricted-entity-protected
parent-in-us    write    US  interoperable purpose  deny  -
parent-in-us    write    US  interoperable none     deny  -
parent-in-us    delete   US  protected     purpose  deny  forbid-restricted-entity-protected
parent-in-us    delete   US  protected     none     deny  forbid-restricted-entity-protected
parent-in-us    delete   US  interoperable purpose  deny  -
parent-in-us    delete   US  interoperable none     deny  -
parent-in-us    register SG  -             purpose  allow permit-parent-non-us-subjects
parent-in-us    register SG  -             none     allow permit-parent-non-us-subjects
parent-in-us    list     SG  -             purpose  allow permit-parent-non-us-subjects
parent-in-us    list     SG  -             none     allow permit-parent-non-us-subjects
parent-in-us    read     SG  protected     purpose  allow permit-parent-non-us-data
parent-in-us    read     SG  protected     none     deny  -
parent-in-us    read     SG  interoperable purpose  allow permit-parent-interoperable-read,permit-parent-non-us-data
parent-in-us    read     SG  interoperable none     allow permit-parent-interoperable-read
parent-in-us    write    SG  protected     purpose  allow permit-parent-non-us-data
parent-in-us    write    SG  protected     none     deny  -
parent-in-us    write    SG  interoperable purpose  allow permit-parent-non-us-data
parent-in-us    write    SG  interoperable none     deny  -
parent-in-us    delete   SG  protected     purpose  allow permit-parent-non-us-data
parent-in-us    delete   SG  protected     none     deny  -
parent-in-us    delete   SG  interoperable purpose  allow permit-parent-non-us-data
parent-in-us    delete   SG  interoperable none     deny  -
monitor         register US  -             purpose  deny  forbid-monitor-user-data
monitor         register US  -             none     deny  forbid-monitor-user-data
monitor         list     US  -             purpose  deny  forbid-monitor-user-data
monitor         list     US  -             none     deny  forbid-monitor-user-data
monitor         read     US  protected     purpose  deny  forbid-monitor-user-data
monitor         read     US  protected     none     deny  forbid-monitor-user-data
monitor         read     US  interoperable purpose  deny  forbid-monitor-user-data
monitor         read     US  interoperable none     deny  forbid-monitor-user-data
monitor         write    US  protected     purpose  deny  forbid-monitor-user-data
monitor         write    US  protected     none     deny  forbid-monitor-user-data
monitor         write    US  interoperable purpose  deny  forbid-monitor-user-data
monitor         write    US  interoperable none     deny  forbid-monitor-user-data
monitor         delete   US  protected     purpose  deny  forbid-monitor-user-data
monitor         delete   US  protected     none     deny  forbid-monitor-user-data
monitor         delete   US  interoperable purpose  deny  forbid-monitor-user-data
monitor         delete   US  interoperable none     deny  forbid-monitor-user-data
monitor         register SG  -             purpose  deny  forbid-monitor-user-data
monitor         register SG  -             none     deny  forbid-monitor-user-data
monitor         list     SG  -             purpose  deny  forbid-monitor-user-data
monitor         list     SG  -             none     deny  forbid-monitor-user-data
monitor         read     SG  protected     purpose  deny  forbid-monitor-user-data
monitor         read     SG  protected     none     deny  forbid-monitor-user-data
monitor         read     SG  interoperable purpose  deny  forbid-monitor-user-data
monitor         read     SG  interoperable none     deny  forbid-monitor-user-data
monitor         write    SG  protected     purpose  deny  forbid-monitor-user-data
monitor         write    SG  protected     none     deny  forbid-monitor-user-data
monitor         write    SG  interoperable purpose  deny  forbid-monitor-user-data
monitor         write    SG  interoperable none     deny  forbid-monitor-user-data
monitor         delete   SG  protected     purpose  deny  forbid-monitor-user-data
monitor         delete   SG  protected     none     deny  forbid-monitor-user-data
monitor         delete   SG  interoperable purpose  deny  forbid-monitor-user-data
monitor         delete   SG  interoperable none     deny  forbid-monitor-user-data
service         register US  -             purpose  allow permit-usds-vetted-subjects
service         register US  -             none     allow permit-usds-vetted-subjects
service         list     US  -             purpose  allow permit-usds-vetted-subjects
service         list     US  -             none     allow permit-usds-vetted-subjects
service         read     US  protected     purpose  allow permit-usds-vetted-data
service         read     US  protected     none     deny  -
service         read     US  interoperable purpose  allow permit-usds-vetted-data
service         read     US  interoperable none     deny  -
service         write    US  protected     purpose  allow permit-usds-vetted-data
service         write    US  protected     none     deny  -
service         write    US  interoperable purpose  allow permit-usds-vetted-data
service         write    US  interoperable none     deny  -
service         delete   US  protected     purpose  allow permit-usds-vetted-data
service         delete   US  protected     none     deny  -
service         delete   US  interoperable purpose  allow permit-usds-vetted-data
service         delete   US  interoperable none     deny  -
service         register SG  -             purpose  deny  -
service         register SG  -             none     deny  -
service         list     SG  -             purpose  deny  -
service         list     SG  -             none     deny  -
service         read     SG  protected     purpose  deny  -
service         read     SG  protected     none     deny  -
service         read     SG  interoperable purpose  deny  -
service         read     SG  interoperable none     deny  -
service         write    SG  protected     purpose  deny  -
service         write    SG  protected     none     deny  -
service         write    SG  interoperable purpose  deny  -
service         write    SG  interoperable none     deny  -
service         delete   SG  protected     purpose  deny  -
service         delete   SG  protected     none     deny  -
service         delete   SG  interoperable purpose  deny  -
service         delete   SG  interoperable none     deny  -
";

fn principal(name: &str) -> Principal {
    // (entity, entity_country, location, clearance, roles)
    let (entity, country, location, clearance, roles): (&str, &str, &str, &[&str], &[&str]) =
        match name {
            "usds-vetted" => ("usds", "US", "US", &["us-data"], &["engineer"]),
            "usds-uncleared" => ("usds", "US", "US", &[], &["engineer"]),
            "usds-in-cn" => ("usds", "US", "CN", &["us-data"], &["engineer"]),
            "parent-in-cn" => ("parent", "CN", "CN", &[], &["engineer"]),
            "parent-in-sg" => ("parent", "CN", "SG", &[], &["engineer"]),
            "parent-in-us" => ("parent", "CN", "US", &[], &["engineer"]),
            "monitor" => ("monitor", "US", "US", &[], &["monitor"]),
            "service" => ("usds", "US", "US", &["us-data"], &["service"]),
            other => panic!("unknown principal {other:?} in table"),
        };
    let strings = |v: &[&str]| v.iter().map(|s| s.to_string()).collect();
    Principal {
        id: format!("{name}@example"),
        entity: entity.into(),
        entity_country: country.into(),
        location: location.into(),
        clearance: strings(clearance),
        roles: strings(roles),
    }
}

fn action(name: &str) -> Action {
    match name {
        "register" => Action::Register,
        "list" => Action::List,
        "read" => Action::Read,
        "write" => Action::Write,
        "delete" => Action::Delete,
        other => panic!("unknown action {other:?} in table"),
    }
}

fn resource(jurisdiction: &str, field_class: &str) -> Resource {
    // Residency in the reference scenario: US subjects live in us-east, others in sg-legacy.
    let (site, site_jurisdiction) = if jurisdiction == "US" {
        ("us-east", "US")
    } else {
        ("sg-legacy", "SG")
    };
    if field_class == "-" {
        Resource::Subject {
            subject_jurisdiction: jurisdiction.into(),
            site: site.into(),
            site_jurisdiction: site_jurisdiction.into(),
            suspended: false,
        }
    } else {
        Resource::Data {
            subject_jurisdiction: jurisdiction.into(),
            collection: "profile".into(),
            field_class: field_class.into(),
            site: site.into(),
            site_jurisdiction: site_jurisdiction.into(),
            approval_required: false,
            suspended: false,
        }
    }
}

#[test]
fn default_policy_table() {
    let restricted: Vec<String> = ["CN", "RU", "IR", "KP"].map(String::from).to_vec();
    let engine = PolicyEngine::new(DEFAULT_SCHEMA, &policy::default_policies(&restricted))
        .expect("default policies load");

    let mut rows = 0;
    let mut failures = Vec::new();
    for line in TABLE.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let cols: Vec<&str> = line.split_whitespace().collect();
        let [who, what, jurisdiction, class, purpose, outcome, ids] = cols[..] else {
            panic!("malformed table row: {line}");
        };
        let request = AccessRequest {
            principal: principal(who),
            action: action(what),
            resource: resource(jurisdiction, class),
            context: Context {
                purpose: match purpose {
                    "purpose" => "support-ticket".into(),
                    "none" => String::new(),
                    other => panic!("bad purpose column {other:?}"),
                },
                reason_code: String::new(),
                network_zone: String::new(),
                time: 1_750_000_000,
                grant: String::new(),
                own_data: false,
            },
        };
        let expected_allowed = match outcome {
            "allow" => true,
            "deny" => false,
            other => panic!("bad outcome column {other:?}"),
        };
        let expected_ids: Vec<String> = if ids == "-" {
            Vec::new()
        } else {
            ids.split(',').map(String::from).collect()
        };

        let got = engine.decide(&request);
        rows += 1;
        if got.allowed != expected_allowed || got.policies != expected_ids || !got.errors.is_empty()
        {
            failures.push(format!(
                "{who} {what} {jurisdiction} {class} purpose={purpose}: expected {outcome} {expected_ids:?}, got {} {:?} errors {:?}",
                if got.allowed { "allow" } else { "deny" },
                got.policies,
                got.errors,
            ));
        }
    }
    assert_eq!(rows, 8 * 2 * 16, "the table should cover every combination");
    assert!(
        failures.is_empty(),
        "{} of {rows} rows disagree:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// The custodian's attributes: a suspended jurisdiction permits nothing, and protected fields of
/// a collection that requires approval need a grant (approved or break-glass), while
/// interoperable fields do not.
#[test]
fn kill_switch_and_grants() {
    let restricted: Vec<String> = ["CN", "RU", "IR", "KP"].map(String::from).to_vec();
    let engine = PolicyEngine::new(DEFAULT_SCHEMA, &policy::default_policies(&restricted))
        .expect("default policies load");
    let vetted = principal("usds-vetted");
    let data = |class: &str, approval_required: bool, suspended: bool| Resource::Data {
        subject_jurisdiction: "US".into(),
        collection: "activity".into(),
        field_class: class.into(),
        site: "us-east".into(),
        site_jurisdiction: "US".into(),
        approval_required,
        suspended,
    };
    let decide = |action: Action, resource: Resource, grant: &str| {
        engine.decide(&AccessRequest {
            principal: vetted.clone(),
            action,
            resource,
            context: Context {
                purpose: "support-ticket".into(),
                grant: grant.into(),
                own_data: false,
                ..Context::default()
            },
        })
    };
    let ids = |d: &policy::Decision| d.policies.join(",");

    for grant in ["", "approved", "break-glass"] {
        let d = decide(Action::Read, data("protected", false, true), grant);
        assert!(!d.allowed, "suspended, grant {grant:?}");
        assert_eq!(ids(&d), "forbid-suspended-jurisdiction");
        let subject = Resource::Subject {
            subject_jurisdiction: "US".into(),
            site: "us-east".into(),
            site_jurisdiction: "US".into(),
            suspended: true,
        };
        let d = decide(Action::Register, subject, grant);
        assert!(!d.allowed);
        assert_eq!(ids(&d), "forbid-suspended-jurisdiction");
    }
    for action in [Action::Read, Action::Write, Action::Delete] {
        let d = decide(action, data("protected", true, false), "");
        assert!(!d.allowed, "{action:?} without a grant");
        assert_eq!(ids(&d), "forbid-protected-without-grant");
        for grant in ["approved", "break-glass"] {
            let d = decide(action, data("protected", true, false), grant);
            assert!(d.allowed, "{action:?} with grant {grant}");
            assert_eq!(ids(&d), "permit-usds-vetted-data");
        }
        let d = decide(action, data("interoperable", true, false), "");
        assert!(d.allowed, "{action:?} interoperable needs no grant");
    }
    // A grant never lets anyone in whom the other policies keep out.
    let parent_cn = principal("parent-in-cn");
    let d = engine.decide(&AccessRequest {
        principal: parent_cn,
        action: Action::Read,
        resource: data("protected", true, false),
        context: Context {
            purpose: "support-ticket".into(),
            grant: "approved".into(),
            own_data: false,
            ..Context::default()
        },
    });
    assert!(!d.allowed);
}
