//! `sovereign init`: writes a complete default setup modelling the reference scenario
//! (configuration, Cedar schema and policies, the development token issuer's keys, one
//! embedded store per site) into a data folder.

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
/// The development custodian's signer key: it signs policy activations, algorithm releases
/// and kill-switch commands. A real custodian keeps this key offline.
pub const CUSTODIAN_KEY: &str = "keys/custodian.key";
pub const CUSTODIAN_VKEY: &str = "keys/custodian.vkey";

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
    fs::create_dir_all(data_dir)
        .with_context(|| format!("cannot create data folder {}", data_dir.display()))?;
    let mut files = Vec::new();

    let restricted: Vec<String> = DEFAULT_RESTRICTED.iter().map(|s| s.to_string()).collect();
    write_file(
        data_dir,
        SCHEMA_FILE,
        policy::DEFAULT_SCHEMA.as_bytes(),
        0o644,
        &mut files,
    )?;
    let policies = policy::default_policies(&restricted);
    write_file(
        data_dir,
        POLICIES_FILE,
        policies.as_bytes(),
        0o644,
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
        0o644,
        &mut files,
    )?;
    let signer = tlog::note::Signer::new(&custodian_skey)
        .map_err(|e| anyhow::anyhow!("cannot load the custodian key: {e}"))?;
    let activation = custody::statement::Statement::PolicyActivation {
        policy_set: policy::policy_set_hash(policy::DEFAULT_SCHEMA, &policies),
    };
    let signed = custody::statement::sign(&activation, &signer)
        .map_err(|e| anyhow::anyhow!("cannot sign the first policy set: {e}"))?;
    write_file(data_dir, POLICY_SIGNATURE_FILE, &signed, 0o644, &mut files)?;

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
    let mut pseudonym = [0u8; 32];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut pseudonym);
    write_file(
        data_dir,
        LOG_PSEUDONYM_KEY,
        hex::encode(pseudonym).as_bytes(),
        0o600,
        &mut files,
    )?;

    write_file(
        data_dir,
        CONFIG_FILE,
        default_config_text().as_bytes(),
        0o644,
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

/// Writes a file atomically (temporary file, fsync, rename) with the given mode.
fn write_file(
    data_dir: &Path,
    relative: &str,
    bytes: &[u8],
    mode: u32,
    written: &mut Vec<PathBuf>,
) -> anyhow::Result<()> {
    let path = data_dir.join(relative);
    let parent = path.parent().expect("relative paths have a parent");
    fs::create_dir_all(parent).with_context(|| format!("cannot create {}", parent.display()))?;
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
