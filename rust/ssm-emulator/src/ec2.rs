//! EC2 `DescribeInstances` and `GetPasswordData` over the EC2 query protocol, answered from the
//! configured inventory.
//!
//! The wire format follows what aws-sdk-ec2 reads: a form-encoded POST (`Action`, `Version`,
//! `Filter.N.Name`, `Filter.N.Value.M`, `InstanceId.N`, `MaxResults`, `NextToken`), answered by
//! `DescribeInstancesResponse` XML in the 2016-11-15 namespace, or on failure HTTP 400 with
//! `<Response><Errors><Error><Code/><Message/></Error></Errors><RequestID/></Response>`.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use axum::response::Response;
use serde::{Deserialize, Serialize};

use crate::reply;

/// EC2 instance states with their numeric codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum InstanceState {
    /// 0.
    Pending,
    /// 16.
    #[default]
    Running,
    /// 32.
    ShuttingDown,
    /// 48.
    Terminated,
    /// 64.
    Stopping,
    /// 80.
    Stopped,
}

impl InstanceState {
    /// The state's name as EC2 writes it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Running => "running",
            Self::ShuttingDown => "shutting-down",
            Self::Terminated => "terminated",
            Self::Stopping => "stopping",
            Self::Stopped => "stopped",
        }
    }

    /// The state's code as EC2 writes it.
    pub fn code(self) -> u16 {
        match self {
            Self::Pending => 0,
            Self::Running => 16,
            Self::ShuttingDown => 32,
            Self::Terminated => 48,
            Self::Stopping => 64,
            Self::Stopped => 80,
        }
    }
}

fn default_az() -> String {
    "us-east-1a".into()
}

/// One instance of the emulated EC2 inventory (`--inventory FILE` is a JSON array of these).
///
/// ```json
/// {"instance_id": "i-0123456789abcdef0", "tags": {"Name": "web"}, "private_ip": "10.0.0.5",
///  "public_ip": "203.0.113.5", "ipv6": ["fd00::5"], "port_map": {"22": 2222}}
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Instance {
    /// `i-` and hex digits.
    pub instance_id: String,
    /// State (default `running`). Sessions to instances that are not running are refused.
    #[serde(default)]
    pub state: InstanceState,
    /// Tags.
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// Primary private IPv4 address.
    #[serde(default)]
    pub private_ip: Option<Ipv4Addr>,
    /// Public IPv4 address.
    #[serde(default)]
    pub public_ip: Option<Ipv4Addr>,
    /// IPv6 addresses.
    #[serde(default)]
    pub ipv6: Vec<Ipv6Addr>,
    /// Availability zone (default `us-east-1a`).
    #[serde(default = "default_az")]
    pub availability_zone: String,
    /// Host this instance's port sessions dial (default: the emulator's `instance_host`).
    #[serde(default)]
    pub host: Option<String>,
    /// Remote port → local port for this instance's port sessions; consulted before the
    /// emulator-wide `port_map`.
    #[serde(default)]
    pub port_map: BTreeMap<u16, u16>,
    /// KMS key this instance's sessions are encrypted with, in place of the emulator-wide
    /// `kms_key_id`.
    #[serde(default)]
    pub kms_key_id: Option<String>,
    /// A Windows instance: the Administrator password EC2Launch set, given out by
    /// `GetPasswordData` encrypted to [`Instance::key_pair_public_key`]. Such an instance has
    /// `platform` `windows` in DescribeInstances.
    #[serde(default)]
    pub windows_password: Option<String>,
    /// The public half of the key pair the instance was launched with, PEM (`BEGIN PUBLIC KEY`
    /// or `BEGIN RSA PUBLIC KEY`).
    #[serde(default)]
    pub key_pair_public_key: Option<String>,
}

impl Instance {
    /// A running instance with nothing else set.
    pub fn running(instance_id: impl Into<String>) -> Self {
        Self {
            instance_id: instance_id.into(),
            state: InstanceState::Running,
            tags: BTreeMap::new(),
            private_ip: None,
            public_ip: None,
            ipv6: Vec::new(),
            availability_zone: default_az(),
            host: None,
            port_map: BTreeMap::new(),
            kms_key_id: None,
            windows_password: None,
            key_pair_public_key: None,
        }
    }

    /// A Windows instance whose Administrator password is `password`, launched with the key
    /// pair whose public key is `public_key_pem`.
    pub fn windows(mut self, password: impl Into<String>, public_key_pem: impl Into<String>) -> Self {
        self.windows_password = Some(password.into());
        self.key_pair_public_key = Some(public_key_pem.into());
        self
    }

    /// With a tag.
    pub fn tag(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.tags.insert(key.into(), value.into());
        self
    }

    /// With a state.
    pub fn state(mut self, state: InstanceState) -> Self {
        self.state = state;
        self
    }

    /// With a primary private IPv4 address.
    pub fn private_ip(mut self, ip: Ipv4Addr) -> Self {
        self.private_ip = Some(ip);
        self
    }

    /// With a public IPv4 address.
    pub fn public_ip(mut self, ip: Ipv4Addr) -> Self {
        self.public_ip = Some(ip);
        self
    }

    /// With one more IPv6 address.
    pub fn ipv6(mut self, ip: Ipv6Addr) -> Self {
        self.ipv6.push(ip);
        self
    }

    /// With an availability zone.
    pub fn availability_zone(mut self, az: impl Into<String>) -> Self {
        self.availability_zone = az.into();
        self
    }

    /// With a port mapping for this instance's port sessions.
    pub fn map_port(mut self, remote: u16, local: u16) -> Self {
        self.port_map.insert(remote, local);
        self
    }

    fn reservation_id(&self) -> String {
        let hex: String = self.instance_id.trim_start_matches("i-").chars().rev().collect();
        format!("r-{hex}")
    }
}

/// An EC2 query-protocol error.
struct QueryError {
    code: &'static str,
    message: String,
}

fn err(code: &'static str, message: impl Into<String>) -> QueryError {
    QueryError {
        code,
        message: message.into(),
    }
}

/// Entry point for form-encoded POSTs without `X-Amz-Target`.
pub(crate) fn query(inventory: &[Instance], body: &[u8]) -> Response {
    let params: Vec<(String, String)> = url::form_urlencoded::parse(body).into_owned().collect();
    let action = params.iter().find(|(k, _)| k == "Action").map(|(_, v)| v.as_str());
    let result = match action {
        Some("DescribeInstances") => describe_instances(inventory, &params),
        Some("GetPasswordData") => get_password_data(inventory, &params),
        Some(other) => Err(err(
            "InvalidAction",
            format!("The action {other} is not valid for this web service."),
        )),
        None => Err(err("MissingAction", "The request must contain the parameter Action.")),
    };
    match result {
        Ok(body) => reply::xml(body),
        Err(e) => reply::xml_error(e.code, &e.message),
    }
}

#[derive(Debug, Default)]
struct Request {
    instance_ids: Vec<String>,
    filters: BTreeMap<u32, (Option<String>, BTreeMap<u32, String>)>,
    max_results: Option<usize>,
    next_token: Option<String>,
}

fn index(s: &str, key: &str) -> Result<u32, QueryError> {
    s.parse()
        .map_err(|_| err("UnknownParameter", format!("The parameter {key} is not recognized")))
}

fn parse_request(params: &[(String, String)]) -> Result<Request, QueryError> {
    let mut r = Request::default();
    let mut ids = BTreeMap::new();
    for (k, v) in params {
        let parts: Vec<&str> = k.split('.').collect();
        match parts.as_slice() {
            ["Action"] | ["Version"] => {}
            ["DryRun"] if v == "false" => {}
            ["DryRun"] => {
                return Err(err(
                    "DryRunOperation",
                    "Request would have succeeded, but DryRun flag is set.",
                ));
            }
            ["InstanceId", n] => {
                ids.insert(index(n, k)?, v.clone());
            }
            ["Filter", n, "Name"] => {
                r.filters.entry(index(n, k)?).or_default().0 = Some(v.clone());
            }
            ["Filter", n, "Value", m] => {
                let m = index(m, k)?;
                r.filters.entry(index(n, k)?).or_default().1.insert(m, v.clone());
            }
            ["MaxResults"] => {
                let n: usize = v
                    .parse()
                    .map_err(|_| err("InvalidParameterValue", format!("Invalid value '{v}' for maxResults")))?;
                if !(5..=1000).contains(&n) {
                    return Err(err(
                        "InvalidParameterValue",
                        format!(
                            "Value ( {n} ) for parameter maxResults is invalid. Expecting a value between 5 and 1000."
                        ),
                    ));
                }
                r.max_results = Some(n);
            }
            ["NextToken"] => r.next_token = Some(v.clone()),
            _ => return Err(err("UnknownParameter", format!("The parameter {k} is not recognized"))),
        }
    }
    r.instance_ids = ids.into_values().collect();
    if r.max_results.is_some() && !r.instance_ids.is_empty() {
        return Err(err(
            "InvalidParameterCombination",
            "The parameter instancesSet cannot be used with the parameter maxResults",
        ));
    }
    Ok(r)
}

/// EC2 filter value matching: `*` any run, `?` any one character.
fn glob(pattern: &str, value: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let v: Vec<char> = value.chars().collect();
    let (mut pi, mut vi) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while vi < v.len() {
        match p.get(pi) {
            Some('*') => {
                star = Some((pi, vi));
                pi += 1;
            }
            Some(&c) if c == '?' || c == v[vi] => {
                pi += 1;
                vi += 1;
            }
            _ => match star {
                Some((sp, sv)) => {
                    pi = sp + 1;
                    vi = sv + 1;
                    star = Some((sp, sv + 1));
                }
                None => return false,
            },
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

fn value_matches(pattern: &str, value: &str) -> bool {
    // Addresses compare as addresses (EC2 normalises IPv6 text).
    if let (Ok(a), Ok(b)) = (pattern.parse::<IpAddr>(), value.parse::<IpAddr>()) {
        return a == b;
    }
    glob(pattern, value)
}

/// The values an instance has for a filter name; `None` for names EC2 would reject.
fn attribute(i: &Instance, name: &str) -> Option<Vec<String>> {
    let ip = |a: Option<Ipv4Addr>| a.map(|a| a.to_string()).into_iter().collect::<Vec<_>>();
    Some(match name {
        "instance-id" => vec![i.instance_id.clone()],
        "instance-state-name" => vec![i.state.name().to_owned()],
        "instance-state-code" => vec![i.state.code().to_string()],
        "availability-zone" => vec![i.availability_zone.clone()],
        "private-ip-address" | "network-interface.addresses.private-ip-address" => ip(i.private_ip),
        "ip-address" | "network-interface.association.public-ip" => ip(i.public_ip),
        "ipv6-address" | "network-interface.ipv6-addresses.ipv6-address" => {
            i.ipv6.iter().map(ToString::to_string).collect()
        }
        "tag-key" => i.tags.keys().cloned().collect(),
        "tag-value" => i.tags.values().cloned().collect(),
        _ => match name.strip_prefix("tag:") {
            Some(key) => i.tags.get(key).cloned().into_iter().collect(),
            None => return None,
        },
    })
}

fn describe_instances(inventory: &[Instance], params: &[(String, String)]) -> Result<String, QueryError> {
    let req = parse_request(params)?;
    let mut filters = Vec::new();
    for (name, values) in req.filters.into_values() {
        let name = name.ok_or_else(|| err("InvalidParameterValue", "A filter has no Name"))?;
        if values.is_empty() {
            return Err(err(
                "InvalidParameterValue",
                format!("The filter '{name}' has no values"),
            ));
        }
        if attribute(&Instance::running("i-0"), &name).is_none() {
            return Err(err("InvalidParameterValue", format!("The filter '{name}' is invalid")));
        }
        filters.push((name, values.into_values().collect::<Vec<_>>()));
    }
    for id in &req.instance_ids {
        let ok = id
            .strip_prefix("i-")
            .is_some_and(|h| !h.is_empty() && h.bytes().all(|b| b.is_ascii_hexdigit()));
        if !ok {
            return Err(err("InvalidInstanceID.Malformed", format!("Invalid id: \"{id}\"")));
        }
    }
    let missing: Vec<&str> = req
        .instance_ids
        .iter()
        .filter(|id| !inventory.iter().any(|i| &i.instance_id == *id))
        .map(String::as_str)
        .collect();
    match missing.as_slice() {
        [] => {}
        [one] => {
            return Err(err(
                "InvalidInstanceID.NotFound",
                format!("The instance ID '{one}' does not exist"),
            ));
        }
        many => {
            return Err(err(
                "InvalidInstanceID.NotFound",
                format!("The instance IDs '{}' do not exist", many.join(", ")),
            ));
        }
    }
    let matching: Vec<&Instance> = inventory
        .iter()
        .filter(|i| req.instance_ids.is_empty() || req.instance_ids.contains(&i.instance_id))
        .filter(|i| {
            filters.iter().all(|(name, patterns)| {
                let have = attribute(i, name).unwrap_or_default();
                patterns.iter().any(|p| have.iter().any(|v| value_matches(p, v)))
            })
        })
        .collect();
    let start = match &req.next_token {
        None => 0,
        Some(t) => t
            .strip_prefix("emulator-page-")
            .and_then(|n| n.parse::<usize>().ok())
            .filter(|&n| n <= matching.len())
            .ok_or_else(|| err("InvalidParameterValue", format!("Invalid value '{t}' for NextToken")))?,
    };
    let end = req
        .max_results
        .map_or(matching.len(), |m| (start + m).min(matching.len()));
    let mut out = String::from(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<DescribeInstancesResponse xmlns=\"http://ec2.amazonaws.com/doc/2016-11-15/\">",
    );
    out.push_str(&format!(
        "<requestId>{}</requestId><reservationSet>",
        reply::request_id()
    ));
    for i in &matching[start..end] {
        write_reservation(&mut out, i);
    }
    out.push_str("</reservationSet>");
    if end < matching.len() {
        out.push_str(&format!("<nextToken>emulator-page-{end}</nextToken>"));
    }
    out.push_str("</DescribeInstancesResponse>");
    Ok(out)
}

/// `GetPasswordData` as EC2 answers it: the Windows Administrator password, encrypted by the
/// instance (EC2Launch) to its key pair's public key with RSA PKCS#1 v1.5 and base64-encoded;
/// empty (not an error) for an instance without one (not Windows, or no password yet). An id
/// EC2 does not know is `InvalidInstanceID.NotFound`. (The EC2 API reference, GetPasswordData:
/// "If the password is not available, the parameter returns an empty string".)
fn get_password_data(inventory: &[Instance], params: &[(String, String)]) -> Result<String, QueryError> {
    use base64::Engine as _;
    use rsa::pkcs1::DecodeRsaPublicKey as _;
    use rsa::pkcs8::DecodePublicKey as _;
    let mut id = None;
    for (k, v) in params {
        match k.as_str() {
            "Action" | "Version" => {}
            "InstanceId" => id = Some(v.clone()),
            "DryRun" if v == "false" => {}
            _ => return Err(err("UnknownParameter", format!("The parameter {k} is not recognized"))),
        }
    }
    let id = id.ok_or_else(|| err("MissingParameter", "The request must contain the parameter instanceId"))?;
    let instance = inventory.iter().find(|i| i.instance_id == id).ok_or_else(|| {
        err(
            "InvalidInstanceID.NotFound",
            format!("The instance ID '{id}' does not exist"),
        )
    })?;
    let data = match (&instance.windows_password, &instance.key_pair_public_key) {
        (Some(password), Some(pem)) => {
            let key = rsa::RsaPublicKey::from_public_key_pem(pem)
                .or_else(|_| rsa::RsaPublicKey::from_pkcs1_pem(pem))
                .map_err(|e| {
                    err(
                        "InternalError",
                        format!("the inventory's key pair is not an RSA public key: {e}"),
                    )
                })?;
            let sealed = key
                .encrypt(&mut rsa::rand_core::OsRng, rsa::Pkcs1v15Encrypt, password.as_bytes())
                .map_err(|e| err("InternalError", format!("encrypting the password: {e}")))?;
            base64::engine::general_purpose::STANDARD.encode(sealed)
        }
        _ => String::new(),
    };
    Ok(format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<GetPasswordDataResponse xmlns=\"http://ec2.amazonaws.com/doc/2016-11-15/\">\
         <requestId>{}</requestId><instanceId>{}</instanceId>\
         <timestamp>2026-01-01T00:00:00.000Z</timestamp><passwordData>{data}</passwordData>\
         </GetPasswordDataResponse>",
        reply::request_id(),
        reply::escape(&instance.instance_id)
    ))
}

const OWNER_ID: &str = "123456789012";

fn write_reservation(out: &mut String, i: &Instance) {
    let e = reply::escape;
    out.push_str(&format!(
        "<item><reservationId>{}</reservationId><ownerId>{OWNER_ID}</ownerId><groupSet/><instancesSet><item>",
        e(&i.reservation_id())
    ));
    out.push_str(&format!(
        "<instanceId>{}</instanceId><imageId>ami-00000000000000000</imageId>\
         <instanceState><code>{}</code><name>{}</name></instanceState>\
         <instanceType>t3.micro</instanceType>\
         <placement><availabilityZone>{}</availabilityZone><tenancy>default</tenancy></placement>",
        e(&i.instance_id),
        i.state.code(),
        i.state.name(),
        e(&i.availability_zone)
    ));
    if i.windows_password.is_some() {
        out.push_str("<platform>windows</platform>");
    }
    if let Some(ip) = i.private_ip {
        let dns = format!("ip-{}.ec2.internal", ip.to_string().replace('.', "-"));
        out.push_str(&format!(
            "<privateDnsName>{dns}</privateDnsName><privateIpAddress>{ip}</privateIpAddress>"
        ));
    }
    if let Some(ip) = i.public_ip {
        out.push_str(&format!("<ipAddress>{ip}</ipAddress>"));
    }
    if let Some(first) = i.ipv6.first() {
        out.push_str(&format!("<ipv6Address>{first}</ipv6Address>"));
    }
    if !i.tags.is_empty() {
        out.push_str("<tagSet>");
        for (k, v) in &i.tags {
            out.push_str(&format!("<item><key>{}</key><value>{}</value></item>", e(k), e(v)));
        }
        out.push_str("</tagSet>");
    }
    let eni: String = i.instance_id.trim_start_matches("i-").chars().take(17).collect();
    out.push_str(&format!(
        "<networkInterfaceSet><item><networkInterfaceId>eni-{eni}</networkInterfaceId><status>in-use</status>"
    ));
    if let Some(ip) = i.private_ip {
        out.push_str(&format!(
            "<privateIpAddress>{ip}</privateIpAddress><privateIpAddressesSet><item><privateIpAddress>{ip}</privateIpAddress><primary>true</primary>"
        ));
        if let Some(public) = i.public_ip {
            out.push_str(&format!("<association><publicIp>{public}</publicIp></association>"));
        }
        out.push_str("</item></privateIpAddressesSet>");
    }
    if !i.ipv6.is_empty() {
        out.push_str("<ipv6AddressesSet>");
        for (n, ip) in i.ipv6.iter().enumerate() {
            out.push_str(&format!(
                "<item><ipv6Address>{ip}</ipv6Address><isPrimaryIpv6>{}</isPrimaryIpv6></item>",
                n == 0
            ));
        }
        out.push_str("</ipv6AddressesSet>");
    }
    out.push_str("</item></networkInterfaceSet></item></instancesSet></item>");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob("web", "web"));
        assert!(glob("web*", "web-1"));
        assert!(glob("*", ""));
        assert!(glob("w?b", "web"));
        assert!(glob("*-1", "web-1"));
        assert!(glob("a*b*c", "aXXbYYc"));
        assert!(!glob("web", "web-1"));
        assert!(!glob("w?b", "wb"));
        assert!(!glob("a*b*c", "aXXbYY"));
    }

    fn params(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        let mut v = vec![("Action".to_owned(), "DescribeInstances".to_owned())];
        v.extend(pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
        v
    }

    #[test]
    fn filters_and_pages() {
        let inv: Vec<Instance> = (0..7)
            .map(|n| {
                Instance::running(format!("i-000000000000000{n:02x}")).tag("Role", if n < 6 { "web" } else { "db" })
            })
            .collect();
        let web_page = |token: Option<&str>| {
            let mut p = vec![
                ("Filter.1.Name", "tag:Role"),
                ("Filter.1.Value.1", "web"),
                ("MaxResults", "5"),
            ];
            p.extend(token.map(|t| ("NextToken", t)));
            describe_instances(&inv, &params(&p)).map_err(|e| e.message).unwrap()
        };
        let body = web_page(None);
        assert_eq!(body.matches("<instanceId>").count(), 5);
        assert!(body.contains("<nextToken>emulator-page-5</nextToken>"));
        let body = web_page(Some("emulator-page-5"));
        assert_eq!(body.matches("<instanceId>").count(), 1);
        assert!(!body.contains("nextToken"));
        let e = describe_instances(&inv, &params(&[("Filter.1.Name", "bogus"), ("Filter.1.Value.1", "x")]))
            .err()
            .unwrap();
        assert_eq!(e.code, "InvalidParameterValue");
        let e = describe_instances(&inv, &params(&[("InstanceId.1", "i-0badbadbad")]))
            .err()
            .unwrap();
        assert_eq!(e.code, "InvalidInstanceID.NotFound");
    }
}
