//! Authentication: `Authorization: Bearer <JWT>` verified against the configured issuers,
//! then turned into a policy principal. Who a principal is, where it is and what it may be
//! trusted with come only from the signed claims and from the configured network zones,
//! never from a plain request header.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};

use anyhow::Context as _;
use axum::http::{HeaderMap, StatusCode, header};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::config::{Config, EntityConfig, NetworkZone, find_zone, is_country_code};
use crate::http::error::{ApiError, ErrorCode};
use crate::http::vocab::ROLE_DATA_SUBJECT;
use crate::pseudonym::Pseudonymizer;

/// Longest accepted token; anything longer is not a token we issued.
const MAX_TOKEN_BYTES: usize = 8 * 1024;
/// Most clearances or roles one token may carry, and the longest of each.
const MAX_LIST_ITEMS: usize = 64;
const MAX_ITEM_BYTES: usize = 64;

/// The claims Sovereign reads from a token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub iss: String,
    pub exp: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<i64>,
    pub entity: String,
    /// Where the principal works from: ISO 3166-1 alpha-2, upper case.
    pub location: String,
    #[serde(default)]
    pub clearance: Vec<String>,
    #[serde(default)]
    pub roles: Vec<String>,
}

/// An authenticated principal, with the network zone its connection came from.
#[derive(Debug, Clone)]
pub struct Authenticated {
    pub principal: policy::Principal,
    pub network_zone: String,
    /// The id the log, the live feed and the service log show: the token's `sub`, or for a
    /// data subject (role `data-subject`) `subject:` and its keyed log pseudonym, since a
    /// data subject's `sub` is their subject id.
    pub public_id: String,
}

impl Authenticated {
    pub fn has_role(&self, role: &str) -> bool {
        self.principal.roles.iter().any(|r| r == role)
    }

    /// 403 `role_required` unless the principal holds one of `roles`.
    pub fn require_role(&self, roles: &[&str]) -> Result<(), ApiError> {
        if roles.iter().any(|r| self.has_role(r)) {
            return Ok(());
        }
        Err(ApiError::new(
            StatusCode::FORBIDDEN,
            ErrorCode::RoleRequired,
            format!("this needs one of the roles: {}", roles.join(", ")),
        ))
    }
}

struct VerifyKey {
    kid: Option<String>,
    algorithm: Algorithm,
    key: DecodingKey,
}

struct Issuer {
    keys: Vec<VerifyKey>,
    audience: Option<String>,
}

pub struct Authenticator {
    issuers: HashMap<String, Issuer>,
    leeway: u64,
    /// `auth.max_token_lifetime`, in seconds: how far ahead `exp` may be.
    max_lifetime: u64,
    cache: TokenCache,
    entities: BTreeMap<String, EntityConfig>,
    restricted: BTreeSet<String>,
    zones: Vec<NetworkZone>,
    subject_pseudonyms: Option<Pseudonymizer>,
}

impl Authenticator {
    /// Loads every issuer's keys. Fails if a key file cannot be read or parsed.
    pub fn new(config: &Config, data_dir: &Path) -> anyhow::Result<Self> {
        let mut issuers = HashMap::new();
        for issuer in &config.auth.issuers {
            let keys = if let Some(pem) = &issuer.public_key_pem {
                let path = data_dir.join(pem);
                let bytes = std::fs::read(&path)
                    .with_context(|| format!("cannot read issuer key {}", path.display()))?;
                let key = DecodingKey::from_ed_pem(&bytes).with_context(|| {
                    format!(
                        "{} is not an Ed25519 public key in PEM form",
                        path.display()
                    )
                })?;
                vec![VerifyKey {
                    kid: None,
                    algorithm: Algorithm::EdDSA,
                    key,
                }]
            } else if let Some(jwks) = &issuer.jwks {
                load_jwks(&data_dir.join(jwks))?
            } else {
                anyhow::bail!("issuer `{}` has no key", issuer.issuer);
            };
            issuers.insert(
                issuer.issuer.clone(),
                Issuer {
                    keys,
                    audience: issuer.audience.clone(),
                },
            );
        }
        Ok(Authenticator {
            issuers,
            leeway: config.auth.leeway_seconds,
            max_lifetime: config.auth.max_token_lifetime.as_secs(),
            cache: TokenCache::new(config.auth.token_cache_entries),
            entities: config.entities.clone(),
            restricted: config.restricted_countries.clone(),
            zones: config.network_zones.clone(),
            subject_pseudonyms: None,
        })
    }

    /// Shows data subjects by their log pseudonym (see [`Authenticated::public_id`]).
    pub fn with_subject_pseudonyms(mut self, pseudonyms: Pseudonymizer) -> Self {
        self.subject_pseudonyms = Some(pseudonyms);
        self
    }

    /// Authenticates a request: verifies its bearer token, then derives the principal.
    pub fn authenticate(
        &self,
        headers: &HeaderMap,
        peer: IpAddr,
    ) -> Result<Authenticated, ApiError> {
        let token = bearer_token(headers)?;
        let claims = self.verify(token)?;
        self.principal(&claims, peer)
    }

    /// Verifies a token's signature, issuer, times and claim shapes.
    pub fn verify(&self, token: &str) -> Result<Arc<Claims>, ApiError> {
        let now = now_unix();
        let cache_key: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        if let Some(claims) = self.cache.get(&cache_key, now, self.leeway) {
            return Ok(claims);
        }

        let (header, payload) = peek(token)?;
        let alg = header.get("alg").and_then(|v| v.as_str()).unwrap_or("");
        if alg.eq_ignore_ascii_case("none") {
            return Err(unauthenticated(
                "unsupported_algorithm",
                "tokens with `alg: none` are never accepted",
            ));
        }
        let algorithm: Algorithm = alg.parse().map_err(|_| {
            unauthenticated(
                "unsupported_algorithm",
                format!("token algorithm `{alg}` is not supported"),
            )
        })?;
        let iss = payload
            .get("iss")
            .and_then(|v| v.as_str())
            .ok_or_else(|| unauthenticated("invalid_claims", "token has no `iss` claim"))?;
        let issuer = self.issuers.get(iss).ok_or_else(|| {
            unauthenticated("unknown_issuer", format!("issuer `{iss}` is not trusted"))
        })?;
        // A `kid` that names no key of the issuer is refused outright; keys without a kid
        // (a PEM key) are tried for any token of their algorithm.
        let kid = header.get("kid").and_then(|v| v.as_str());
        let by_kid: Vec<&VerifyKey> = issuer
            .keys
            .iter()
            .filter(|k| match (kid, &k.kid) {
                (Some(want), Some(have)) => want == have,
                _ => true,
            })
            .collect();
        if by_kid.is_empty() {
            return Err(unauthenticated(
                "unknown_key",
                format!(
                    "issuer `{iss}` has no key with id `{}`",
                    kid.unwrap_or_default()
                ),
            ));
        }
        let candidates: Vec<&VerifyKey> = by_kid
            .into_iter()
            .filter(|k| k.algorithm == algorithm)
            .collect();
        if candidates.is_empty() {
            return Err(unauthenticated(
                "unsupported_algorithm",
                format!("issuer `{iss}` has no key for algorithm `{alg}`"),
            ));
        }

        let mut validation = Validation::new(algorithm);
        validation.leeway = self.leeway;
        validation.validate_nbf = true;
        validation.set_issuer(&[iss]);
        validation.set_required_spec_claims(&["exp", "iss", "sub"]);
        match &issuer.audience {
            Some(aud) => validation.set_audience(&[aud]),
            None => validation.validate_aud = false,
        }

        let mut last_error = None;
        for candidate in candidates {
            match jsonwebtoken::decode::<Claims>(token, &candidate.key, &validation) {
                Ok(data) => {
                    check_claims(&data.claims)?;
                    // Without a configured audience the token must name none: one that names
                    // an audience was made for some other service.
                    if issuer.audience.is_none() && payload.get("aud").is_some() {
                        return Err(unauthenticated(
                            "unexpected_audience",
                            format!(
                                "the token names an audience (`aud`), but issuer `{iss}` has no audience configured here: it was made for another service"
                            ),
                        ));
                    }
                    self.check_lifetime(&data.claims, now)?;
                    let claims = Arc::new(data.claims);
                    self.cache.insert(cache_key, claims.clone());
                    return Ok(claims);
                }
                Err(e) => last_error = Some(e),
            }
        }
        Err(map_jwt_error(
            last_error.expect("at least one candidate key"),
        ))
    }

    /// Refuses a token whose `exp` is further ahead than `auth.max_token_lifetime` (plus the
    /// leeway): such a token, once leaked, could not be taken back.
    fn check_lifetime(&self, claims: &Claims, now: i64) -> Result<(), ApiError> {
        let remaining = claims.exp.saturating_sub(now);
        let allowed =
            i64::try_from(self.max_lifetime.saturating_add(self.leeway)).unwrap_or(i64::MAX);
        if remaining > allowed {
            return Err(unauthenticated(
                "lifetime_too_long",
                format!(
                    "the token expires more than {} from now, longer than `auth.max_token_lifetime` allows; ask its issuer for a shorter-lived token",
                    humantime::format_duration(std::time::Duration::from_secs(self.max_lifetime))
                ),
            ));
        }
        Ok(())
    }

    /// Turns verified claims into a policy principal. The location is the signed claim,
    /// unless the peer's network zone is in a restricted country: then the principal counts
    /// as located there (if either is restricted, the principal is).
    pub fn principal(&self, claims: &Claims, peer: IpAddr) -> Result<Authenticated, ApiError> {
        let entity = self.entities.get(&claims.entity).ok_or_else(|| {
            ApiError::new(
                StatusCode::FORBIDDEN,
                ErrorCode::UnknownEntity,
                format!(
                    "entity `{}` is not declared in the configuration",
                    claims.entity
                ),
            )
        })?;
        let zone = find_zone(&self.zones, peer);
        let mut location = claims.location.clone();
        if let Some(zone) = zone
            && self.restricted.contains(&zone.country)
            && !self.restricted.contains(&location)
        {
            location = zone.country.clone();
        }
        let public_id = match &self.subject_pseudonyms {
            Some(pseudonyms) if claims.roles.iter().any(|r| r == ROLE_DATA_SUBJECT) => {
                format!("subject:{}", pseudonyms.pseudonym(&claims.sub))
            }
            _ => claims.sub.clone(),
        };
        Ok(Authenticated {
            public_id,
            principal: policy::Principal {
                id: claims.sub.clone(),
                entity: claims.entity.clone(),
                entity_country: entity.country.clone(),
                location,
                clearance: claims.clearance.clone(),
                roles: claims.roles.clone(),
            },
            network_zone: zone.map(|z| z.name.clone()).unwrap_or_default(),
        })
    }
}

fn load_jwks(path: &Path) -> anyhow::Result<Vec<VerifyKey>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read JWKS {}", path.display()))?;
    let set: JwkSet = serde_json::from_str(&text)
        .with_context(|| format!("{} is not a JWKS document", path.display()))?;
    let mut keys = Vec::new();
    for (i, jwk) in set.keys.iter().enumerate() {
        let algorithm = match &jwk.algorithm {
            AlgorithmParameters::OctetKeyPair(p) if p.curve == EllipticCurve::Ed25519 => {
                Algorithm::EdDSA
            }
            AlgorithmParameters::EllipticCurve(p) if p.curve == EllipticCurve::P256 => {
                Algorithm::ES256
            }
            AlgorithmParameters::EllipticCurve(p) if p.curve == EllipticCurve::P384 => {
                Algorithm::ES384
            }
            AlgorithmParameters::RSA(_) => Algorithm::RS256,
            _ => anyhow::bail!(
                "{}: key {i} is of a type Sovereign does not accept (use Ed25519, P-256, P-384 or RSA)",
                path.display()
            ),
        };
        let key = DecodingKey::from_jwk(jwk)
            .with_context(|| format!("{}: key {i} is not usable", path.display()))?;
        keys.push(VerifyKey {
            kid: jwk.common.key_id.clone(),
            algorithm,
            key,
        });
    }
    if keys.is_empty() {
        anyhow::bail!("{} holds no keys", path.display());
    }
    Ok(keys)
}

fn bearer_token(headers: &HeaderMap) -> Result<&str, ApiError> {
    let value = headers
        .get(header::AUTHORIZATION)
        .ok_or_else(|| unauthenticated("missing", "no `Authorization: Bearer <token>` header"))?;
    let value = value
        .to_str()
        .map_err(|_| unauthenticated("malformed", "the Authorization header is not ASCII"))?;
    let (scheme, token) = value
        .split_once(' ')
        .ok_or_else(|| unauthenticated("malformed", "expected `Authorization: Bearer <token>`"))?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(unauthenticated(
            "malformed",
            "expected `Authorization: Bearer <token>`",
        ));
    }
    let token = token.trim();
    if token.is_empty() {
        return Err(unauthenticated("missing", "the bearer token is empty"));
    }
    if token.len() > MAX_TOKEN_BYTES {
        return Err(unauthenticated(
            "malformed",
            format!("the bearer token is longer than {MAX_TOKEN_BYTES} bytes"),
        ));
    }
    Ok(token)
}

/// Reads a token's header and payload without verifying it, only to pick the issuer and key.
fn peek(token: &str) -> Result<(serde_json::Value, serde_json::Value), ApiError> {
    let malformed = || unauthenticated("malformed", "the bearer token is not a well-formed JWT");
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(_sig), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(malformed());
    };
    let decode = |part: &str| -> Result<serde_json::Value, ApiError> {
        let bytes = URL_SAFE_NO_PAD.decode(part).map_err(|_| malformed())?;
        let value: serde_json::Value = serde_json::from_slice(&bytes).map_err(|_| malformed())?;
        if value.is_object() {
            Ok(value)
        } else {
            Err(malformed())
        }
    };
    Ok((decode(h)?, decode(p)?))
}

fn check_claims(claims: &Claims) -> Result<(), ApiError> {
    let invalid = |m: String| unauthenticated("invalid_claims", m);
    if claims.sub.is_empty() || claims.sub.len() > 256 {
        return Err(invalid("`sub` must be 1-256 bytes".into()));
    }
    if claims.entity.is_empty() {
        return Err(invalid("`entity` must not be empty".into()));
    }
    if !is_country_code(&claims.location) {
        return Err(invalid(format!(
            "`location` must be an ISO 3166-1 alpha-2 code in upper case, not `{}`",
            claims.location
        )));
    }
    for (name, list) in [("clearance", &claims.clearance), ("roles", &claims.roles)] {
        if list.len() > MAX_LIST_ITEMS
            || list
                .iter()
                .any(|s| s.is_empty() || s.len() > MAX_ITEM_BYTES)
        {
            return Err(invalid(format!(
                "`{name}` must hold at most {MAX_LIST_ITEMS} non-empty items of at most {MAX_ITEM_BYTES} bytes"
            )));
        }
    }
    Ok(())
}

fn map_jwt_error(e: jsonwebtoken::errors::Error) -> ApiError {
    match e.kind() {
        ErrorKind::ExpiredSignature => unauthenticated("expired", "the token has expired"),
        ErrorKind::ImmatureSignature => unauthenticated(
            "not_yet_valid",
            "the token is not valid yet (`nbf` is in the future)",
        ),
        ErrorKind::InvalidSignature => {
            unauthenticated("bad_signature", "the token's signature does not verify")
        }
        ErrorKind::InvalidIssuer => {
            unauthenticated("unknown_issuer", "the token's issuer is not trusted")
        }
        ErrorKind::InvalidAudience => unauthenticated(
            "invalid_claims",
            "the token is not meant for this service (`aud`)",
        ),
        ErrorKind::InvalidAlgorithm
        | ErrorKind::InvalidAlgorithmName
        | ErrorKind::MissingAlgorithm => unauthenticated(
            "unsupported_algorithm",
            "the token's algorithm is not accepted",
        ),
        ErrorKind::MissingRequiredClaim(claim) => unauthenticated(
            "invalid_claims",
            format!("the token has no `{claim}` claim"),
        ),
        ErrorKind::Json(e) => unauthenticated(
            "invalid_claims",
            format!("the token's claims are not as expected: {e}"),
        ),
        _ => unauthenticated("malformed", "the bearer token is not a well-formed JWT"),
    }
}

fn unauthenticated(reason: &'static str, message: impl Into<String>) -> ApiError {
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        ErrorCode::Unauthenticated,
        message,
    )
    .with("reason", reason)
}

pub fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Verified tokens, kept until they expire. Bounded by configuration: when full, it is
/// emptied rather than grown, which costs only re-verification.
struct TokenCache {
    capacity: usize,
    map: Mutex<HashMap<[u8; 32], Arc<Claims>>>,
}

impl TokenCache {
    fn new(capacity: usize) -> Self {
        TokenCache {
            capacity,
            map: Mutex::new(HashMap::new()),
        }
    }

    fn get(&self, key: &[u8; 32], now: i64, leeway: u64) -> Option<Arc<Claims>> {
        if self.capacity == 0 {
            return None;
        }
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        let claims = map.get(key)?.clone();
        if claims.exp.saturating_add(leeway as i64) <= now {
            map.remove(key);
            return None;
        }
        Some(claims)
    }

    fn insert(&self, key: [u8; 32], claims: Arc<Claims>) {
        if self.capacity == 0 {
            return;
        }
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= self.capacity {
            map.clear();
        }
        map.insert(key, claims);
    }
}

/// Development tokens: signed with the issuer key that `sovereign init` wrote. Refuses a
/// token the gateway would refuse for living too long (`auth.max_token_lifetime` of the data
/// folder's configuration, or its default if that cannot be read).
pub fn mint_dev_token(data_dir: &Path, claims: &Claims) -> anyhow::Result<String> {
    let max_lifetime = std::fs::read_to_string(data_dir.join(crate::config::CONFIG_FILE))
        .ok()
        .and_then(|text| Config::parse(&text).ok())
        .map_or(crate::config::DEFAULT_MAX_TOKEN_LIFETIME, |c| {
            c.auth.max_token_lifetime
        });
    let lifetime = claims.exp.saturating_sub(now_unix());
    if lifetime > i64::try_from(max_lifetime.as_secs()).unwrap_or(i64::MAX) {
        anyhow::bail!(
            "the token would live {}s, longer than `auth.max_token_lifetime` ({}) allows, so the gateway would refuse it: ask for a shorter lifetime",
            lifetime,
            humantime::format_duration(max_lifetime)
        );
    }
    let path = data_dir.join(crate::setup::DEV_ISSUER_KEY);
    let pem = std::fs::read(&path).with_context(|| {
        format!(
            "cannot read the development issuer key {} (run `sovereign init`?)",
            path.display()
        )
    })?;
    let key = EncodingKey::from_ed_pem(&pem).with_context(|| {
        format!(
            "{} is not an Ed25519 private key in PEM form",
            path.display()
        )
    })?;
    let header = Header::new(Algorithm::EdDSA);
    Ok(jsonwebtoken::encode(&header, claims, &key)?)
}
