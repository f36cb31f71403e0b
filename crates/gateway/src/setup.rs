//! `sovereign init`: writes a complete default setup modelling the reference scenario
//! (configuration, Cedar schema and policies, the development token issuer's keys, one
//! embedded store per site) into a data folder.
//!
//! A data folder is private to the gateway's user: the folder and every folder in it 0700,
//! every file 0600. Site stores hold interoperable values in plaintext, and the custody and
//! key stores raw subject ids. `init` writes its own files with those modes whatever the
//! umask; the SQLite files the stores create (with their `-wal` and `-shm`) follow the
//! process's umask, which `sovereign` sets to [`PRIVATE_UMASK`] before anything else.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use ed25519_dalek::SigningKey;
use ed25519_dalek::pkcs8::{EncodePrivateKey, EncodePublicKey, spki::der::pem::LineEnding};

use crate::config::{CONFIG_FILE, Config};

/// The restricted countries of the reference scenario (for the US: China, Russia, Iran, North Korea).
pub const DEFAULT_RESTRICTED: [&str; 4] = ["CN", "RU", "IR", "KP"];
/// The `iss` of development tokens minted by `sovereign token`.
pub const DEV_ISSUER: &str = "sovereign-dev";
/// The development issuer's key files, relative to the data folder.
pub const DEV_ISSUER_KEY: &str = "keys/dev-issuer.key.pem";
pub const DEV_ISSUER_PUB: &str = "keys/dev-issuer.pub.pem";
pub const LOG_SIGNER_KEY: &str = "keys/log-signer.key";
pub const LOG_PSEUDONYM_KEY: &str = "keys/log-pseudonym.key";
pub const SCHEMA_FILE: &str = "policy/sovereign.cedarschema";
pub const POLICIES_FILE: &str = "policy/policies.cedar";
pub const POLICY_SIGNATURE_FILE: &str = "policy/policies.sig";
pub use crate::config::{INVARIANTS_FILE, INVARIANTS_SIGNATURE_FILE};
/// The development custodian's signer key: it signs policy activations, algorithm releases
/// and kill-switch commands. A real custodian keeps this key offline.
pub const CUSTODIAN_KEY: &str = "keys/custodian.key";
pub const CUSTODIAN_VKEY: &str = "keys/custodian.vkey";
/// The custodian's key-encryption key, which wraps every data key.
pub const CUSTODIAN_KEK: &str = "keys/custodian-kek.key";
pub const EGRESS_PSEUDONYM_KEY: &str = "keys/egress-pseudonym.key";
/// The site where `--seed-legacy` places its subjects, and their jurisdiction.
pub const LEGACY_SITE: &str = "sg-legacy";
pub const LEGACY_JURISDICTION: &str = "US";

/// The file-creation mask of every `sovereign` command: files 0600, folders 0700.
pub const PRIVATE_UMASK: u32 = 0o077;

/// Sets the process's umask to [`PRIVATE_UMASK`], so that whatever the gateway and its stores
/// create (SQLite databases with their `-wal` and `-shm` files, algorithm artifacts, folders)
/// is private to its user. Process-wide: call it at start.
pub fn private_umask() {
    #[cfg(unix)]
    // SAFETY: umask only sets the process's file-creation mask; it touches no memory.
    unsafe {
        libc::umask(PRIVATE_UMASK as libc::mode_t);
    }
}

/// Makes the data folder itself private (0700) if others may enter or read it; returns the
/// mode it had if it changed. Files inside a private folder are out of others' reach, even
/// those written by an older version with looser modes.
pub fn secure_data_dir(data_dir: &Path) -> anyhow::Result<Option<u32>> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(data_dir)
            .with_context(|| format!("cannot read the data folder {}", data_dir.display()))?
            .permissions()
            .mode()
            & 0o7777;
        if mode & 0o077 != 0 {
            fs::set_permissions(data_dir, fs::Permissions::from_mode(0o700)).with_context(
                || {
                    format!(
                        "cannot make the data folder {} private (mode 0700)",
                        data_dir.display()
                    )
                },
            )?;
            return Ok(Some(mode));
        }
    }
    #[cfg(not(unix))]
    let _ = data_dir;
    Ok(None)
}

/// Creates `dir` and its missing parents, each private (0700).
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir)
}

/// The default `sovereign.toml`, with comments: it doubles as the configuration reference.
pub fn default_config_text() -> String {
    include_str!("../defaults/sovereign.toml").to_string()
}

/// What `init` wrote.
#[derive(Debug)]
pub struct InitReport {
    pub data_dir: PathBuf,
    pub files: Vec<PathBuf>,
}

/// Writes a default setup into `data_dir`. Refuses if a configuration is already there,
/// unless `force`. Site stores that already exist are kept: `init` never deletes data.
pub fn init(data_dir: &Path, force: bool) -> anyhow::Result<InitReport> {
    let config_path = data_dir.join(CONFIG_FILE);
    if config_path.exists() && !force {
        bail!(
            "{} already holds a Sovereign setup ({} exists); use --force to overwrite its configuration, policies and keys",
            data_dir.display(),
            config_path.display()
        );
    }
    create_private_dir(data_dir)
        .with_context(|| format!("cannot create data folder {}", data_dir.display()))?;
    secure_data_dir(data_dir)?;
    let mut files = Vec::new();

    let restricted: Vec<String> = DEFAULT_RESTRICTED.iter().map(|s| s.to_string()).collect();
    write_file(
        data_dir,
        SCHEMA_FILE,
        policy::DEFAULT_SCHEMA.as_bytes(),
        0o600,
        &mut files,
    )?;
    let policies = policy::default_policies(&restricted);
    write_file(
        data_dir,
        POLICIES_FILE,
        policies.as_bytes(),
        0o600,
        &mut files,
    )?;

    // The development custodian signs the first policy set, as a real custodian would before
    // the gateway's first start.
    let (custodian_skey, custodian_vkey) = tlog::note::generate_key("custodian")
        .map_err(|e| anyhow::anyhow!("cannot generate the custodian key: {e}"))?;
    write_file(
        data_dir,
        CUSTODIAN_KEY,
        custodian_skey.as_bytes(),
        0o600,
        &mut files,
    )?;
    write_file(
        data_dir,
        CUSTODIAN_VKEY,
        format!("{custodian_vkey}\n").as_bytes(),
        0o600,
        &mut files,
    )?;
    let signer = tlog::note::Signer::new(&custodian_skey)
        .map_err(|e| anyhow::anyhow!("cannot load the custodian key: {e}"))?;
    let activation = custody::statement::Statement::PolicyActivation {
        policy_set: policy::policy_set_hash(policy::DEFAULT_SCHEMA, &policies),
    };
    let signed = custody::statement::sign(&activation, &signer)
        .map_err(|e| anyhow::anyhow!("cannot sign the first policy set: {e}"))?;
    write_file(data_dir, POLICY_SIGNATURE_FILE, &signed, 0o600, &mut files)?;

    // The reference scenario's promises, which every policy set must be proven to keep; the
    // custodian signs them as well.
    let invariants = prove::default_invariants(&restricted);
    write_file(
        data_dir,
        INVARIANTS_FILE,
        invariants.as_bytes(),
        0o600,
        &mut files,
    )?;
    let invariant_set = prove::Invariants::parse_with_schema(policy::DEFAULT_SCHEMA, &invariants)
        .context("the default invariants do not parse")?;
    let activation = custody::statement::Statement::InvariantActivation {
        invariant_set: invariant_set.hash().to_string(),
    };
    let signed = custody::statement::sign(&activation, &signer)
        .map_err(|e| anyhow::anyhow!("cannot sign the invariants: {e}"))?;
    write_file(
        data_dir,
        INVARIANTS_SIGNATURE_FILE,
        &signed,
        0o600,
        &mut files,
    )?;

    let signing = SigningKey::generate(&mut rand::rngs::OsRng);
    let private_pem = signing
        .to_pkcs8_pem(LineEnding::LF)
        .context("cannot encode the issuer key")?;
    let public_pem = signing
        .verifying_key()
        .to_public_key_pem(LineEnding::LF)
        .context("cannot encode the issuer public key")?;
    write_file(
        data_dir,
        DEV_ISSUER_KEY,
        private_pem.as_bytes(),
        0o600,
        &mut files,
    )?;
    write_file(
        data_dir,
        DEV_ISSUER_PUB,
        public_pem.as_bytes(),
        0o600,
        &mut files,
    )?;

    // The log's origin names this log uniquely, so that its checkpoints cannot be confused
    // with another Sovereign's.
    let mut suffix = [0u8; 6];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut suffix);
    let origin = format!("sovereign.local/log-{}", hex::encode(suffix));
    let (signer_key, _verifier) = tlog::note::generate_key(&origin)
        .map_err(|e| anyhow::anyhow!("cannot generate the log key: {e}"))?;
    write_file(
        data_dir,
        LOG_SIGNER_KEY,
        signer_key.as_bytes(),
        0o600,
        &mut files,
    )?;
    for secret in [LOG_PSEUDONYM_KEY, EGRESS_PSEUDONYM_KEY, CUSTODIAN_KEK] {
        // A new key-encryption key would make every stored protected field unreadable:
        // `--force` keeps the existing one.
        if secret == CUSTODIAN_KEK && data_dir.join(secret).exists() {
            continue;
        }
        let mut key = [0u8; 32];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut key);
        write_file(
            data_dir,
            secret,
            hex::encode(key).as_bytes(),
            0o600,
            &mut files,
        )?;
    }

    write_file(
        data_dir,
        CONFIG_FILE,
        default_config_text().as_bytes(),
        0o600,
        &mut files,
    )?;

    // Create each site's store now, so that the setup is complete and a bad path shows up here.
    let config = Config::load(data_dir).map_err(|e| anyhow::anyhow!("{e}"))?;
    let vault = vault::Vault::open(config.layout(), data_dir, 1)
        .context("cannot create the site stores")?;
    for (site, _) in vault.stores() {
        files.push(data_dir.join("sites").join(site));
    }
    Ok(InitReport {
        data_dir: data_dir.to_path_buf(),
        files,
    })
}

/// Places `count` synthetic `US` subjects (with profile and activity records) at
/// `sg-legacy`, as they were before residency was enforced, so that a new user can watch a
/// residency scan fail and a migration fix it. Their ids are `legacy-us-0001`, ... Run it on
/// a stopped setup (it writes the stores directly). Returns the ids.
pub fn seed_legacy(data_dir: &Path, count: usize) -> anyhow::Result<Vec<String>> {
    seed_legacy_with_progress(data_dir, count, &mut |_, _| {})
}

/// Legacy subjects placed at a time by [`seed_legacy_with_progress`]: small enough that its
/// progress moves, large enough that each store commit carries many.
const SEED_CHUNK: usize = 100;

/// [`seed_legacy`], calling `progress(done, total)` after each chunk of subjects placed.
/// A failure leaves the chunks placed before it in place, and says how many.
pub fn seed_legacy_with_progress(
    data_dir: &Path,
    count: usize,
    progress: &mut dyn FnMut(u64, u64),
) -> anyhow::Result<Vec<String>> {
    let config = Config::load(data_dir).map_err(|e| anyhow::anyhow!("{e}"))?;
    if !config.sites.contains_key(LEGACY_SITE) {
        bail!("--seed-legacy needs a site named `{LEGACY_SITE}` in the configuration");
    }
    let vault = vault::Vault::open(config.layout(), data_dir, 1)
        .context("cannot open the site stores")?
        .with_envelope(crate::open_envelope(&config, data_dir)?);
    let ids: Vec<String> = (1..=count).map(|i| format!("legacy-us-{i:04}")).collect();
    let mut done = 0;
    for chunk in ids.chunks(SEED_CHUNK) {
        vault
            .seed_legacy(chunk, LEGACY_JURISDICTION, LEGACY_SITE, legacy_records)
            .with_context(|| {
                format!("cannot seed the legacy subjects ({done} of {count} were placed)")
            })?;
        done += chunk.len();
        progress(done as u64, count as u64);
    }
    Ok(ids)
}

/// Synthetic records of a legacy subject: every default collection, protected fields included.
fn legacy_records(id: &str) -> Vec<(String, String, serde_json::Map<String, serde_json::Value>)> {
    let n: u32 = id
        .bytes()
        .fold(7, |h, b| h.wrapping_mul(31).wrapping_add(u32::from(b)));
    let object = |value: serde_json::Value| match value {
        serde_json::Value::Object(map) => map,
        _ => unreachable!("literal objects"),
    };
    vec![
        (
            "profile".into(),
            "main".into(),
            object(serde_json::json!({
                "email": format!("{id}@example.com"),
                "birthdate": format!("19{:02}-{:02}-{:02}", 50 + n % 50, 1 + n % 12, 1 + n % 28),
                "phone": format!("+1 555 {:04}", n % 10_000),
                "display_name": format!("Legacy user {}", n % 1000),
            })),
        ),
        (
            "activity".into(),
            "main".into(),
            object(serde_json::json!({
                "watch_history": format!("v{},v{}", n % 97, n % 89),
                "location": "Austin, TX",
                "public_video_count": n % 40,
            })),
        ),
    ]
}

/// Writes a file atomically (temporary file, fsync, rename) with the given mode (0600 for
/// every file `init` writes), in private folders.
fn write_file(
    data_dir: &Path,
    relative: &str,
    bytes: &[u8],
    mode: u32,
    written: &mut Vec<PathBuf>,
) -> anyhow::Result<()> {
    let path = data_dir.join(relative);
    let parent = path.parent().expect("relative paths have a parent");
    create_private_dir(parent).with_context(|| format!("cannot create {}", parent.display()))?;
    let tmp = path.with_extension("tmp");
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(mode);
    }
    let mut file = options
        .open(&tmp)
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    #[cfg(unix)]
    {
        // The mode given to open() is filtered by the umask; set it exactly.
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(fs::Permissions::from_mode(mode))?;
    }
    file.write_all(bytes)?;
    file.sync_all()?;
    fs::rename(&tmp, &path).with_context(|| format!("cannot write {}", path.display()))?;
    written.push(path);
    Ok(())
}
