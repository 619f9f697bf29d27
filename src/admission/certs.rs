//! The webhook's own CA and serving certificate.
//!
//! Pure at the core: [`Bundle::generate`] makes a CA and a leaf, [`renewal`]
//! decides on rotation at a given time, [`Bundle::rotate`] carries the
//! decision out, [`ca_bundle_patch`] says what the webhook configuration
//! lacks. [`ensure`] is the edge: it keeps the bundle in one Secret
//! (`tls.crt`, `tls.key`, `ca.crt`, `ca.key`) and the trusted CAs in the
//! MutatingWebhookConfiguration's every `caBundle`.
//!
//! Rotation: a leaf is reissued when under a third of its life is left or
//! its names are not the wanted ones; the CA is replaced when under a third
//! of its life is left. The replaced CA stays trusted (in `ca.crt` and the
//! `caBundle`, after the current one) until the next replacement, so leaves
//! it signed, still served by replicas that have not reloaded, keep working.
//! The `caBundle` is written before the Secret, so the API server trusts a
//! new CA before any replica can serve a leaf it signed.
//!
//! RBAC, exactly (the Role in the operator's namespace, the ClusterRole for
//! the cluster-scoped configuration; `create` cannot be restricted by name):
//!
//! ```yaml
//! # Role, namespace of the operator
//! - apiGroups: [""]
//!   resources: [secrets]
//!   resourceNames: [<secret_name>]
//!   verbs: [get, update]
//! - apiGroups: [""]
//!   resources: [secrets]
//!   verbs: [create]
//! # ClusterRole
//! - apiGroups: [admissionregistration.k8s.io]
//!   resources: [mutatingwebhookconfigurations]
//!   resourceNames: [<webhook_config_name>]
//!   verbs: [get, patch]
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PublicKeyData, SanType,
};
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;

const DAY: u64 = 24 * 3600;
/// One year, not ten: the CA key sits in a Secret, and rotation is automatic
/// anyway, so a long life only widens what a leaked key can sign for and
/// leaves the replacement path untried for years.
pub const CA_LIFETIME: Duration = Duration::from_secs(365 * DAY);
/// 90 days, as ACME issues: reissued after 60 days, so a leaked leaf key is
/// good for weeks and the reissue path runs every two months.
pub const LEAF_LIFETIME: Duration = Duration::from_secs(90 * DAY);
/// Certificates start an hour back: an API server whose clock is behind
/// ours still takes a fresh one.
const BACKDATE: Duration = Duration::from_secs(3600);
const CA_NAME: &str = "lifecycle-operator webhook CA";

/// The Secret's keys: `kubernetes.io/tls`'s two, cert-manager's `ca.crt`, and the CA's key.
pub const TLS_CRT: &str = "tls.crt";
pub const TLS_KEY: &str = "tls.key";
pub const CA_CRT: &str = "ca.crt";
pub const CA_KEY: &str = "ca.key";

#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("no {0}")]
    Missing(&'static str),
    #[error("{what}: {reason}")]
    Invalid { what: &'static str, reason: String },
    #[error("certificate generation: {0}")]
    Generate(#[from] rcgen::Error),
}

fn invalid(what: &'static str) -> impl Fn(String) -> CertError {
    move |reason| CertError::Invalid { what, reason }
}

/// The names a serving certificate is for, sorted and without repeats so
/// that two sets compare equal whatever their order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Sans {
    dns: Vec<String>,
    ips: Vec<IpAddr>,
}

impl Sans {
    /// `<service>.<namespace>.svc` and its `.cluster.local` form: the names
    /// the API server calls a Service-referenced webhook by.
    pub fn for_service(service: &str, namespace: &str) -> Self {
        let svc = format!("{service}.{namespace}.svc");
        Self::new(vec![format!("{svc}.cluster.local"), svc], Vec::new())
    }

    /// An IP SAN too, for a URL-configured webhook (out-of-cluster tests: 127.0.0.1).
    pub fn with_ip(mut self, ip: IpAddr) -> Self {
        self.ips.push(ip);
        Self::new(self.dns, self.ips)
    }

    pub fn new(mut dns: Vec<String>, mut ips: Vec<IpAddr>) -> Self {
        dns.sort();
        dns.dedup();
        ips.sort();
        ips.dedup();
        Self { dns, ips }
    }

    pub fn dns(&self) -> &[String] {
        &self.dns
    }

    pub fn ips(&self) -> &[IpAddr] {
        &self.ips
    }
}

/// What a certificate says about itself, read back from its PEM.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertInfo {
    /// Unix seconds.
    pub not_before: i64,
    pub not_after: i64,
    pub is_ca: bool,
    pub sans: Sans,
    /// The DER SubjectPublicKeyInfo: which key the certificate is for.
    spki: Vec<u8>,
}

impl CertInfo {
    /// Under a third of the life left at `now` (unix seconds).
    fn expiring(&self, now: i64) -> bool {
        let life = self.not_after - self.not_before;
        (self.not_after - now) * 3 < life
    }

    fn valid_at(&self, now: i64) -> bool {
        self.not_before <= now && now < self.not_after
    }
}

/// Reads the first certificate of `pem`. Anything but a well-formed X.509
/// certificate is an error.
pub fn inspect(pem: &str) -> Result<CertInfo, CertError> {
    with_cert(pem, |cert| {
        Ok(CertInfo {
            not_before: cert.validity().not_before.timestamp(),
            not_after: cert.validity().not_after.timestamp(),
            is_ca: cert.is_ca(),
            sans: sans_of(cert)?,
            spki: cert.public_key().raw.to_vec(),
        })
    })
}

fn with_cert<T>(
    pem: &str,
    f: impl FnOnce(&X509Certificate<'_>) -> Result<T, CertError>,
) -> Result<T, CertError> {
    let bad = invalid("certificate");
    let (_, pem) =
        x509_parser::pem::parse_x509_pem(pem.as_bytes()).map_err(|e| bad(e.to_string()))?;
    let cert = pem.parse_x509().map_err(|e| bad(e.to_string()))?;
    f(&cert)
}

fn sans_of(cert: &X509Certificate<'_>) -> Result<Sans, CertError> {
    let ext = cert
        .subject_alternative_name()
        .map_err(|e| invalid("subjectAltName")(e.to_string()))?;
    let (mut dns, mut ips) = (Vec::new(), Vec::new());
    for name in ext.iter().flat_map(|e| &e.value.general_names) {
        match name {
            GeneralName::DNSName(d) => dns.push(d.to_string()),
            GeneralName::IPAddress(b) => ips.extend(ip_of(b)),
            _ => {}
        }
    }
    Ok(Sans::new(dns, ips))
}

fn ip_of(b: &[u8]) -> Option<IpAddr> {
    match b.len() {
        4 => <[u8; 4]>::try_from(b).ok().map(IpAddr::from),
        16 => <[u8; 16]>::try_from(b).ok().map(IpAddr::from),
        _ => None,
    }
}

/// Whether `leaf_pem`'s signature verifies with `ca_pem`'s key.
fn signed_by(leaf_pem: &str, ca_pem: &str) -> bool {
    let verified = with_cert(ca_pem, |ca| {
        with_cert(leaf_pem, |leaf| {
            Ok(leaf.verify_signature(Some(ca.public_key())).is_ok())
        })
    });
    verified.unwrap_or(false)
}

/// Whether the private key in `key_pem` is the one `cert` is for.
fn key_matches(key_pem: &str, cert: &CertInfo) -> bool {
    KeyPair::from_pem(key_pem).is_ok_and(|k| k.subject_public_key_info() == cert.spki)
}

fn unix(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_secs()).unwrap_or(i64::MAX),
    }
}

/// The CA and serving certificate, as PEM. `Debug` leaves the keys out.
#[derive(Clone, PartialEq, Eq)]
pub struct Bundle {
    pub ca_cert_pem: String,
    pub ca_key_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
    /// The CA this one replaced: still trusted until the next replacement.
    pub retired_ca_pem: Option<String>,
}

impl fmt::Debug for Bundle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Bundle")
            .field("ca_cert_pem", &self.ca_cert_pem)
            .field("cert_pem", &self.cert_pem)
            .field("retired_ca_pem", &self.retired_ca_pem)
            .finish_non_exhaustive()
    }
}

/// What [`renewal`] decides.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Renewal {
    Keep,
    ReissueLeaf,
    NewCa,
}

/// Whether `bundle` serves `wanted` at `now`, and if not, what to replace.
/// A CA that does not parse, is no CA, or whose key is not its own is
/// replaced; so is a leaf that is not for its key or not signed by the CA.
pub fn renewal(bundle: &Bundle, wanted: &Sans, now: SystemTime) -> Renewal {
    let now = unix(now);
    let Ok(ca) = inspect(&bundle.ca_cert_pem) else {
        return Renewal::NewCa;
    };
    if !ca.is_ca || !key_matches(&bundle.ca_key_pem, &ca) || ca.expiring(now) {
        return Renewal::NewCa;
    }
    let Ok(leaf) = inspect(&bundle.cert_pem) else {
        return Renewal::ReissueLeaf;
    };
    let good = key_matches(&bundle.key_pem, &leaf)
        && signed_by(&bundle.cert_pem, &bundle.ca_cert_pem)
        && leaf.sans == *wanted
        && !leaf.expiring(now);
    if good {
        Renewal::Keep
    } else {
        Renewal::ReissueLeaf
    }
}

impl Bundle {
    /// A new CA and a leaf for `sans` signed by it.
    pub fn generate(sans: &Sans, now: SystemTime) -> Result<Self, CertError> {
        let (ca_cert_pem, ca_key_pem) = new_ca(now)?;
        let (cert_pem, key_pem) = issue(&ca_cert_pem, &ca_key_pem, sans, now)?;
        Ok(Self {
            ca_cert_pem,
            ca_key_pem,
            cert_pem,
            key_pem,
            retired_ca_pem: None,
        })
    }

    /// The CAs the API server is to trust, current first, as one PEM text.
    pub fn ca_bundle(&self) -> String {
        let mut pem = self.ca_cert_pem.clone();
        if let Some(retired) = &self.retired_ca_pem {
            pem.push_str(retired);
        }
        pem
    }

    /// The bundle after `decision`. A replaced CA is retired (kept trusted)
    /// if it is still valid at `now`; a retired CA past its expiry is dropped.
    pub fn rotate(
        &self,
        decision: Renewal,
        sans: &Sans,
        now: SystemTime,
    ) -> Result<Self, CertError> {
        let still_valid =
            |pem: &String| inspect(pem).is_ok_and(|i| i.is_ca && i.valid_at(unix(now)));
        match decision {
            Renewal::Keep => Ok(self.clone()),
            Renewal::ReissueLeaf => {
                let (cert_pem, key_pem) = issue(&self.ca_cert_pem, &self.ca_key_pem, sans, now)?;
                Ok(Self {
                    cert_pem,
                    key_pem,
                    retired_ca_pem: self.retired_ca_pem.clone().filter(still_valid),
                    ..self.clone()
                })
            }
            Renewal::NewCa => Ok(Self {
                retired_ca_pem: Some(self.ca_cert_pem.clone()).filter(still_valid),
                ..Self::generate(sans, now)?
            }),
        }
    }

    /// From the four PEM texts as stored; `ca_crt` is [`Bundle::ca_bundle`].
    /// Each must parse; whether they fit together is [`renewal`]'s question.
    pub fn parse(
        ca_crt: &str,
        ca_key: &str,
        tls_crt: &str,
        tls_key: &str,
    ) -> Result<Self, CertError> {
        let mut cas = pem_blocks(ca_crt).into_iter();
        let ca_cert_pem = cas.next().ok_or(CertError::Missing(CA_CRT))?;
        let retired_ca_pem = cas.next();
        for pem in [
            Some(&ca_cert_pem),
            retired_ca_pem.as_ref(),
            Some(&tls_crt.to_string()),
        ]
        .into_iter()
        .flatten()
        {
            inspect(pem)?;
        }
        for key in [ca_key, tls_key] {
            KeyPair::from_pem(key).map_err(|e| invalid("private key")(e.to_string()))?;
        }
        Ok(Self {
            ca_cert_pem,
            ca_key_pem: ca_key.to_string(),
            cert_pem: tls_crt.to_string(),
            key_pem: tls_key.to_string(),
            retired_ca_pem,
        })
    }

    /// From a Secret's data (see the module doc for its keys).
    pub fn from_secret(secret: &Secret) -> Result<Self, CertError> {
        let empty = BTreeMap::new();
        let data = secret.data.as_ref().unwrap_or(&empty);
        let text = |key: &'static str| -> Result<&str, CertError> {
            let bytes = data.get(key).ok_or(CertError::Missing(key))?;
            std::str::from_utf8(&bytes.0).map_err(|e| invalid(key)(e.to_string()))
        };
        Self::parse(text(CA_CRT)?, text(CA_KEY)?, text(TLS_CRT)?, text(TLS_KEY)?)
    }

    /// The Secret's data for this bundle.
    pub fn secret_data(&self) -> BTreeMap<String, ByteString> {
        [
            (TLS_CRT, self.cert_pem.clone()),
            (TLS_KEY, self.key_pem.clone()),
            (CA_CRT, self.ca_bundle()),
            (CA_KEY, self.ca_key_pem.clone()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), ByteString(v.into_bytes())))
        .collect()
    }
}

/// Each certificate of a PEM text, as its own PEM text ending in a newline.
fn pem_blocks(text: &str) -> Vec<String> {
    text.split_inclusive("-----END CERTIFICATE-----")
        .map(str::trim)
        .filter(|b| b.contains("-----BEGIN CERTIFICATE-----"))
        .map(|b| format!("{b}\n"))
        .collect()
}

fn validity(now: SystemTime, life: Duration) -> (time::OffsetDateTime, time::OffsetDateTime) {
    let start = time::OffsetDateTime::from(now) - BACKDATE;
    (start, start + life)
}

fn common_name(cn: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    dn
}

/// A self-signed CA that may sign leaves only (path length 0).
fn new_ca(now: SystemTime) -> Result<(String, String), CertError> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::default();
    params.distinguished_name = common_name(CA_NAME);
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    (params.not_before, params.not_after) = validity(now, CA_LIFETIME);
    let cert = params.self_signed(&key)?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// A serving certificate for `sans`, signed by the CA; it ends no later than the CA.
fn issue(
    ca_cert_pem: &str,
    ca_key_pem: &str,
    sans: &Sans,
    now: SystemTime,
) -> Result<(String, String), CertError> {
    let first = sans
        .dns
        .first()
        .ok_or(CertError::Missing("DNS name to issue for"))?;
    let ca_end = inspect(ca_cert_pem)?.not_after;
    let ca_key = KeyPair::from_pem(ca_key_pem).map_err(|e| invalid(CA_KEY)(e.to_string()))?;
    let issuer = Issuer::from_ca_cert_pem(ca_cert_pem, ca_key)?;
    let mut params = CertificateParams::default();
    params.distinguished_name = common_name(first);
    params.subject_alt_names = san_types(sans)?;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    let (start, end) = validity(now, LEAF_LIFETIME);
    let ca_end = time::OffsetDateTime::from_unix_timestamp(ca_end)
        .map_err(|e| invalid(CA_CRT)(e.to_string()))?;
    (params.not_before, params.not_after) = (start, end.min(ca_end));
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &issuer)?;
    Ok((cert.pem(), key.serialize_pem()))
}

fn san_types(sans: &Sans) -> Result<Vec<SanType>, CertError> {
    let mut out = Vec::new();
    for d in &sans.dns {
        out.push(SanType::DnsName(d.clone().try_into()?));
    }
    out.extend(sans.ips.iter().copied().map(SanType::IpAddress));
    Ok(out)
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Cert(#[from] CertError),
    #[error("API: {0}")]
    Kube(#[from] kube::Error),
    #[error("the webhook Secret changed under each of {0} attempts")]
    Contended(u32),
}

/// A write lost to another replica's is read again, this many times.
const ATTEMPTS: u32 = 3;

/// The bundle in Secret `secret_name`, created or rotated as [`renewal`]
/// says, with its CAs in every webhook of `webhook_config`'s `caBundle`.
/// Replicas may run it at once: creation and updates are optimistic, and
/// the loser reads the winner's bundle.
pub async fn ensure(
    client: &Client,
    namespace: &str,
    secret_name: &str,
    webhook_config: &str,
    wanted: &Sans,
) -> Result<Bundle, Error> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let configs: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    for _ in 0..ATTEMPTS {
        let secret = secrets.get_opt(secret_name).await?;
        let now = SystemTime::now();
        let written = match secret {
            None => create(&secrets, &configs, secret_name, webhook_config, wanted, now).await?,
            Some(s) => renew(&secrets, &configs, s, webhook_config, wanted, now).await?,
        };
        if let Some(bundle) = written {
            return Ok(bundle);
        }
    }
    Err(Error::Contended(ATTEMPTS))
}

/// A new bundle in a new Secret; `None` when another replica created it first.
async fn create(
    secrets: &Api<Secret>,
    configs: &Api<MutatingWebhookConfiguration>,
    name: &str,
    webhook_config: &str,
    wanted: &Sans,
    now: SystemTime,
) -> Result<Option<Bundle>, Error> {
    let bundle = Bundle::generate(wanted, now)?;
    publish(configs, webhook_config, &bundle).await?;
    let secret = Secret {
        metadata: kube::api::ObjectMeta {
            name: Some(name.to_string()),
            ..Default::default()
        },
        type_: Some("kubernetes.io/tls".into()),
        data: Some(bundle.secret_data()),
        ..Default::default()
    };
    match secrets.create(&PostParams::default(), &secret).await {
        Ok(_) => Ok(Some(bundle)),
        Err(e) if is_status(&e, 409) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// The Secret's bundle, rotated in place if due; `None` when another
/// replica updated it since it was read. A Secret that does not parse is
/// overwritten with a new bundle: the webhook must not stay down on it.
async fn renew(
    secrets: &Api<Secret>,
    configs: &Api<MutatingWebhookConfiguration>,
    mut secret: Secret,
    webhook_config: &str,
    wanted: &Sans,
    now: SystemTime,
) -> Result<Option<Bundle>, Error> {
    let next = match Bundle::from_secret(&secret) {
        Ok(bundle) => match renewal(&bundle, wanted, now) {
            Renewal::Keep => {
                publish(configs, webhook_config, &bundle).await?;
                return Ok(Some(bundle));
            }
            decision => {
                tracing::info!(
                    ?decision,
                    secret = secret.name_any(),
                    "rotating the webhook certificate"
                );
                bundle.rotate(decision, wanted, now)?
            }
        },
        // The chart creates the Secret empty: its first bundle.
        Err(_) if secret.data.as_ref().is_none_or(BTreeMap::is_empty) => {
            tracing::info!(
                secret = secret.name_any(),
                "writing the first webhook certificate"
            );
            Bundle::generate(wanted, now)?
        }
        Err(e) => {
            tracing::warn!(error = %e, secret = secret.name_any(), "unreadable webhook certificate; replacing it");
            Bundle::generate(wanted, now)?
        }
    };
    publish(configs, webhook_config, &next).await?;
    secret.data = Some(next.secret_data());
    // The resourceVersion read is kept: a concurrent update makes this a 409.
    match secrets
        .replace(&secret.name_any(), &PostParams::default(), &secret)
        .await
    {
        Ok(_) => Ok(Some(next)),
        Err(e) if is_status(&e, 409) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

fn is_status(e: &kube::Error, code: u16) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == code)
}

/// Sets every webhook's `caBundle` to the bundle's CAs, writing only if one differs.
async fn publish(
    configs: &Api<MutatingWebhookConfiguration>,
    name: &str,
    bundle: &Bundle,
) -> Result<(), Error> {
    let config = configs.get(name).await?;
    if let Some(patch) = ca_bundle_patch(&config, bundle.ca_bundle().as_bytes()) {
        configs
            .patch(name, &PatchParams::default(), &Patch::Json::<()>(patch))
            .await?;
    }
    Ok(())
}

/// The JSON patch that sets each webhook's `caBundle` to `ca`, or `None`
/// when each already has it. Each change is guarded by a `test` of the
/// webhook's name, so a list reordered since the read fails the patch
/// rather than giving one webhook another's position.
pub fn ca_bundle_patch(
    config: &MutatingWebhookConfiguration,
    ca: &[u8],
) -> Option<json_patch::Patch> {
    use json_patch::jsonptr::PointerBuf;
    use json_patch::{AddOperation, PatchOperation, TestOperation};
    let value = serde_json::Value::String(base64(ca));
    let at = |i: usize, tail: &[&str]| {
        let index = i.to_string();
        let tokens = ["webhooks", index.as_str()]
            .into_iter()
            .chain(tail.iter().copied());
        PointerBuf::from_tokens(tokens)
    };
    let ops: Vec<PatchOperation> = config
        .webhooks
        .iter()
        .flatten()
        .enumerate()
        .filter(|(_, w)| w.client_config.ca_bundle.as_ref().map(|b| b.0.as_slice()) != Some(ca))
        .flat_map(|(i, w)| {
            [
                PatchOperation::Test(TestOperation {
                    path: at(i, &["name"]),
                    value: serde_json::Value::String(w.name.clone()),
                }),
                PatchOperation::Add(AddOperation {
                    path: at(i, &["clientConfig", "caBundle"]),
                    value: value.clone(),
                }),
            ]
        })
        .collect();
    (!ops.is_empty()).then_some(json_patch::Patch(ops))
}

/// `ca` as the API encodes bytes (`ByteString`'s standard base64).
fn base64(ca: &[u8]) -> String {
    match serde_json::to_value(ByteString(ca.to_vec())) {
        Ok(serde_json::Value::String(s)) => s,
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use rustls::client::danger::ServerCertVerifier;
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, ServerName, UnixTime};

    use super::*;

    fn t0() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_750_000_000)
    }

    fn days(n: u64) -> Duration {
        Duration::from_secs(n * DAY)
    }

    fn sans() -> Sans {
        Sans::for_service("webhook", "ops").with_ip(IpAddr::from([127, 0, 0, 1]))
    }

    fn at(unix: i64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(u64::try_from(unix).unwrap())
    }

    /// Whether rustls (webpki) takes `leaf` for `name` at `when`, trusting the CAs in `cas`.
    fn verifies(cas: &str, leaf: &str, name: &str, when: SystemTime) -> bool {
        let mut roots = rustls::RootCertStore::empty();
        for ca in CertificateDer::pem_slice_iter(cas.as_bytes()) {
            roots.add(ca.unwrap()).unwrap();
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier =
            rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .unwrap();
        let leaf = CertificateDer::from_pem_slice(leaf.as_bytes()).unwrap();
        let name = ServerName::try_from(name.to_string()).unwrap();
        let now = UnixTime::since_unix_epoch(when.duration_since(UNIX_EPOCH).unwrap());
        verifier
            .verify_server_cert(&leaf, &[], &name, &[], now)
            .is_ok()
    }

    #[test]
    fn service_names_are_both_forms_sorted() {
        let s = Sans::for_service("w", "ns");
        assert_eq!(s.dns(), ["w.ns.svc", "w.ns.svc.cluster.local"]);
        assert_eq!(
            s,
            Sans::new(
                vec![
                    "w.ns.svc.cluster.local".into(),
                    "w.ns.svc".into(),
                    "w.ns.svc".into()
                ],
                vec![]
            )
        );
    }

    #[test]
    fn generated_leaf_verifies_against_its_ca_for_each_name() {
        let b = Bundle::generate(&sans(), t0()).unwrap();
        for name in [
            "webhook.ops.svc",
            "webhook.ops.svc.cluster.local",
            "127.0.0.1",
        ] {
            assert!(verifies(&b.ca_bundle(), &b.cert_pem, name, t0()), "{name}");
        }
        assert!(!verifies(
            &b.ca_bundle(),
            &b.cert_pem,
            "other.ops.svc",
            t0()
        ));
        assert!(!verifies(
            &b.ca_bundle(),
            &b.cert_pem,
            "webhook.ops.svc",
            t0() + days(91)
        ));
        let other = Bundle::generate(&sans(), t0()).unwrap();
        assert!(!verifies(
            &other.ca_bundle(),
            &b.cert_pem,
            "webhook.ops.svc",
            t0()
        ));
    }

    #[test]
    fn generated_certs_have_the_wanted_names_and_lifetimes() {
        let b = Bundle::generate(&sans(), t0()).unwrap();
        let (ca, leaf) = (
            inspect(&b.ca_cert_pem).unwrap(),
            inspect(&b.cert_pem).unwrap(),
        );
        let start = unix(t0()) - 3600;
        assert!(ca.is_ca && !leaf.is_ca);
        assert_eq!((ca.not_before, ca.not_after), (start, start + 365 * 86400));
        assert_eq!(
            (leaf.not_before, leaf.not_after),
            (start, start + 90 * 86400)
        );
        assert_eq!(leaf.sans, sans());
        assert!(key_matches(&b.key_pem, &leaf) && key_matches(&b.ca_key_pem, &ca));
        assert!(!key_matches(&b.ca_key_pem, &leaf));
        assert!(signed_by(&b.cert_pem, &b.ca_cert_pem));
    }

    #[test]
    fn a_leaf_never_outlives_its_ca() {
        let b = Bundle::generate(&sans(), t0()).unwrap();
        let late = t0() + days(300);
        let (cert, _) = issue(&b.ca_cert_pem, &b.ca_key_pem, &sans(), late).unwrap();
        assert_eq!(
            inspect(&cert).unwrap().not_after,
            inspect(&b.ca_cert_pem).unwrap().not_after
        );
    }

    /// The latest time at which `info` has a third of its life left.
    fn last_keep(info: &CertInfo) -> i64 {
        let life = info.not_after - info.not_before;
        info.not_after - (life + 2) / 3
    }

    #[test]
    fn the_leaf_is_reissued_once_under_a_third_of_its_life_is_left() {
        let b = Bundle::generate(&sans(), t0()).unwrap();
        let edge = last_keep(&inspect(&b.cert_pem).unwrap());
        assert_eq!(renewal(&b, &sans(), t0()), Renewal::Keep);
        assert_eq!(renewal(&b, &sans(), at(edge)), Renewal::Keep);
        assert_eq!(renewal(&b, &sans(), at(edge + 1)), Renewal::ReissueLeaf);
        assert_eq!(renewal(&b, &sans(), t0() + days(91)), Renewal::ReissueLeaf);
        let fresh = b
            .rotate(Renewal::ReissueLeaf, &sans(), at(edge + 1))
            .unwrap();
        assert_eq!(fresh.ca_cert_pem, b.ca_cert_pem);
        assert_eq!(renewal(&fresh, &sans(), at(edge + 1)), Renewal::Keep);
    }

    #[test]
    fn the_ca_is_replaced_once_under_a_third_of_its_life_is_left() {
        let b = Bundle::generate(&sans(), t0()).unwrap();
        let edge = last_keep(&inspect(&b.ca_cert_pem).unwrap());
        // A leaf fresh at the edge: only the CA's age decides.
        let b = b.rotate(Renewal::ReissueLeaf, &sans(), at(edge)).unwrap();
        assert_eq!(renewal(&b, &sans(), at(edge)), Renewal::Keep);
        assert_eq!(renewal(&b, &sans(), at(edge + 1)), Renewal::NewCa);
        assert_eq!(renewal(&b, &sans(), t0() + days(400)), Renewal::NewCa);
    }

    #[test]
    fn other_names_a_foreign_signature_or_a_wrong_key_reissue_the_leaf() {
        let b = Bundle::generate(&sans(), t0()).unwrap();
        assert_eq!(
            renewal(&b, &Sans::for_service("webhook", "ops"), t0()),
            Renewal::ReissueLeaf
        );
        let other = Bundle::generate(&sans(), t0()).unwrap();
        let foreign = Bundle {
            cert_pem: other.cert_pem.clone(),
            key_pem: other.key_pem.clone(),
            ..b.clone()
        };
        assert_eq!(renewal(&foreign, &sans(), t0()), Renewal::ReissueLeaf);
        let wrong_key = Bundle {
            key_pem: other.key_pem.clone(),
            ..b.clone()
        };
        assert_eq!(renewal(&wrong_key, &sans(), t0()), Renewal::ReissueLeaf);
        let garbage_leaf = Bundle {
            cert_pem: "garbage".into(),
            ..b.clone()
        };
        assert_eq!(renewal(&garbage_leaf, &sans(), t0()), Renewal::ReissueLeaf);
    }

    #[test]
    fn a_bad_ca_is_replaced() {
        let b = Bundle::generate(&sans(), t0()).unwrap();
        let garbage = Bundle {
            ca_cert_pem: "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n".into(),
            ..b.clone()
        };
        assert_eq!(renewal(&garbage, &sans(), t0()), Renewal::NewCa);
        let other = Bundle::generate(&sans(), t0()).unwrap();
        let wrong_key = Bundle {
            ca_key_pem: other.ca_key_pem.clone(),
            ..b.clone()
        };
        assert_eq!(renewal(&wrong_key, &sans(), t0()), Renewal::NewCa);
        let leaf_as_ca = Bundle {
            ca_cert_pem: b.cert_pem.clone(),
            ca_key_pem: b.key_pem.clone(),
            ..b.clone()
        };
        assert_eq!(renewal(&leaf_as_ca, &sans(), t0()), Renewal::NewCa);
    }

    #[test]
    fn a_new_ca_keeps_the_old_one_trusted_until_the_next() {
        let old = Bundle::generate(&sans(), t0()).unwrap();
        // Its leaf as last reissued, before the CA is due.
        let old = old
            .rotate(Renewal::ReissueLeaf, &sans(), t0() + days(240))
            .unwrap();
        let when = t0() + days(250);
        let new = old.rotate(Renewal::NewCa, &sans(), when).unwrap();
        assert_ne!(new.ca_cert_pem, old.ca_cert_pem);
        assert_eq!(
            new.retired_ca_pem.as_deref(),
            Some(old.ca_cert_pem.as_str())
        );
        assert_eq!(
            pem_blocks(&new.ca_bundle()),
            [new.ca_cert_pem.clone(), old.ca_cert_pem.clone()]
        );
        // Both the leaf still served by a replica that has not reloaded, and the new one.
        for leaf in [&old.cert_pem, &new.cert_pem] {
            assert!(verifies(&new.ca_bundle(), leaf, "webhook.ops.svc", when));
        }
        assert_eq!(renewal(&new, &sans(), when), Renewal::Keep);
        // Past its expiry, the retired CA goes with the next rotation.
        let later = t0() + days(366);
        let next = new.rotate(Renewal::ReissueLeaf, &sans(), later).unwrap();
        assert_eq!(next.retired_ca_pem, None);
        assert_eq!(next.ca_bundle(), new.ca_cert_pem);
        let replaced = new.rotate(Renewal::NewCa, &sans(), later).unwrap();
        assert_eq!(
            replaced.retired_ca_pem.as_deref(),
            Some(new.ca_cert_pem.as_str())
        );
    }

    #[test]
    fn the_secret_data_reads_back_as_the_same_bundle() {
        let b = Bundle::generate(&sans(), t0()).unwrap();
        let b = b.rotate(Renewal::NewCa, &sans(), t0() + days(250)).unwrap();
        let secret = Secret {
            data: Some(b.secret_data()),
            ..Default::default()
        };
        assert_eq!(Bundle::from_secret(&secret).unwrap(), b);
        let debug = format!("{b:?}");
        assert!(!debug.contains("PRIVATE KEY"), "{debug}");
    }

    #[test]
    fn garbage_pem_is_an_error() {
        let b = Bundle::generate(&sans(), t0()).unwrap();
        let truncated = &b.cert_pem[..b.cert_pem.len() / 2];
        let bad_base64 = "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n";
        for pem in ["", "garbage", truncated, bad_base64, &b.key_pem] {
            assert!(inspect(pem).is_err(), "{pem:?}");
        }
        let k =
            |ca: &str, cak: &str, crt: &str, key: &str| Bundle::parse(ca, cak, crt, key).is_err();
        assert!(k("", &b.ca_key_pem, &b.cert_pem, &b.key_pem));
        assert!(k(&b.ca_cert_pem, "garbage", &b.cert_pem, &b.key_pem));
        assert!(k(&b.ca_cert_pem, &b.ca_key_pem, truncated, &b.key_pem));
        assert!(k(&b.ca_cert_pem, &b.ca_key_pem, &b.cert_pem, &b.cert_pem));
        assert!(k(
            &format!("{}{bad_base64}", b.ca_cert_pem),
            &b.ca_key_pem,
            &b.cert_pem,
            &b.key_pem
        ));
        assert!(!k(&b.ca_cert_pem, &b.ca_key_pem, &b.cert_pem, &b.key_pem));
        let mut data = b.secret_data();
        data.remove(CA_KEY);
        assert!(matches!(
            Bundle::from_secret(&Secret {
                data: Some(data),
                ..Default::default()
            }),
            Err(CertError::Missing(CA_KEY))
        ));
        let mut data = b.secret_data();
        data.insert(TLS_CRT.into(), ByteString(vec![0xff, 0xfe]));
        assert!(
            Bundle::from_secret(&Secret {
                data: Some(data),
                ..Default::default()
            })
            .is_err()
        );
        assert!(Bundle::from_secret(&Secret::default()).is_err());
        assert!(issue("garbage", &b.ca_key_pem, &sans(), t0()).is_err());
        assert!(issue(&b.ca_cert_pem, "garbage", &sans(), t0()).is_err());
        assert!(issue(&b.ca_cert_pem, &b.ca_key_pem, &Sans::default(), t0()).is_err());
    }

    fn config(bundles: &[Option<&[u8]>]) -> MutatingWebhookConfiguration {
        let webhooks: Vec<serde_json::Value> = bundles
            .iter()
            .enumerate()
            .map(|(i, b)| {
                let mut cc = serde_json::json!({"service": {"name": "webhook", "namespace": "ops"}});
                if let Some(b) = b {
                    cc["caBundle"] = serde_json::to_value(ByteString(b.to_vec())).unwrap();
                }
                serde_json::json!({"name": format!("w{i}.lifecycle-operator.io"), "clientConfig": cc,
                    "sideEffects": "None", "admissionReviewVersions": ["v1"]})
            })
            .collect();
        serde_json::from_value(serde_json::json!({"metadata": {"name": "c"}, "webhooks": webhooks}))
            .unwrap()
    }

    #[test]
    fn the_ca_bundle_patch_sets_only_the_webhooks_that_differ() {
        let ca = b"CA".as_slice();
        assert!(ca_bundle_patch(&config(&[Some(ca), Some(ca)]), ca).is_none());
        assert!(ca_bundle_patch(&config(&[]), ca).is_none());
        let patch = ca_bundle_patch(&config(&[Some(ca), None, Some(b"old")]), ca).unwrap();
        let got = serde_json::to_value(&patch).unwrap();
        let want = serde_json::json!([
            {"op": "test", "path": "/webhooks/1/name", "value": "w1.lifecycle-operator.io"},
            {"op": "add", "path": "/webhooks/1/clientConfig/caBundle", "value": "Q0E="},
            {"op": "test", "path": "/webhooks/2/name", "value": "w2.lifecycle-operator.io"},
            {"op": "add", "path": "/webhooks/2/clientConfig/caBundle", "value": "Q0E="},
        ]);
        assert_eq!(got, want);
        let mut doc = serde_json::to_value(config(&[Some(ca), None, Some(b"old")])).unwrap();
        json_patch::patch(&mut doc, &patch).unwrap();
        let patched: MutatingWebhookConfiguration = serde_json::from_value(doc).unwrap();
        assert!(ca_bundle_patch(&patched, ca).is_none());
    }
}
