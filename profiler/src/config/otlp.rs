//! OTLP exporter settings: command-line flags over the standard
//! environment variables (signal-specific `OTEL_EXPORTER_OTLP_PROFILES_*`
//! over generic `OTEL_EXPORTER_OTLP_*`), as the OpenTelemetry exporter
//! specification defines them.

use std::{path::PathBuf, time::Duration};

use anyhow::{Context, Result, bail};

use crate::{cli::OtlpArgs, encode::otlp::ResourceSettings};

/// Wire protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    Grpc,
    HttpProtobuf,
}

/// Validated exporter settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OtlpSettings {
    pub protocol: Protocol,
    /// gRPC: `scheme://host:port`; HTTP: the full URL posted to.
    pub endpoint: String,
    /// TLS (https) or plain text.
    pub tls: bool,
    pub headers: Vec<(String, String)>,
    pub gzip: bool,
    pub timeout: Duration,
    pub ca_file: Option<PathBuf>,
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
    /// Batches kept in memory while the collector is unreachable.
    pub queue_batches: usize,
    /// Where undeliverable batches are kept across outages and restarts.
    pub spool_dir: Option<PathBuf>,
    pub spool_max_bytes: u64,
    pub resource: ResourceSettings,
}

/// The HTTP path of the profiles signal (v1development).
pub const HTTP_PATH: &str = "/v1development/profiles";
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// Percent-decoding for header and resource attribute values (the W3C
/// baggage encoding the spec prescribes); a dozen lines, not worth a crate.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(h) = s.get(i + 1..i + 3)
            && let Ok(b) = u8::from_str_radix(h, 16)
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parses `k1=v1,k2=v2` (keys trimmed, values percent-decoded).
pub fn parse_pairs(what: &str, s: &str) -> Result<Vec<(String, String)>> {
    s.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p
                .split_once('=')
                .with_context(|| format!("{what}: {p:?} is not key=value"))?;
            let k = k.trim();
            if k.is_empty() {
                bail!("{what}: empty key in {p:?}");
            }
            Ok((k.to_owned(), percent_decode(v.trim())))
        })
        .collect()
}

fn parse_bool(what: &str, v: &str) -> Result<bool> {
    match v.trim().to_ascii_lowercase().as_str() {
        "true" | "1" => Ok(true),
        "false" | "0" | "" => Ok(false),
        other => bail!("{what}: expected true or false, got {other:?}"),
    }
}

impl OtlpSettings {
    /// Settings from flags and the environment (`env` looks a variable up);
    /// `None` when no endpoint is configured anywhere.
    pub fn resolve(
        args: &OtlpArgs,
        env: &dyn Fn(&str) -> Option<String>,
        host_name: String,
    ) -> Result<Option<Self>> {
        let var = |name: &str| {
            env(&format!("OTEL_EXPORTER_OTLP_PROFILES_{name}"))
                .map(|v| (v, true))
                .or_else(|| env(&format!("OTEL_EXPORTER_OTLP_{name}")).map(|v| (v, false)))
                .filter(|(v, _)| !v.trim().is_empty())
        };
        let protocol = match args
            .otlp_protocol
            .clone()
            .or_else(|| var("PROTOCOL").map(|v| v.0))
            .as_deref()
            .map(str::trim)
        {
            None | Some("grpc") => Protocol::Grpc,
            Some("http/protobuf") => Protocol::HttpProtobuf,
            Some(other) => {
                bail!("OTLP protocol {other:?} is not supported (use grpc or http/protobuf)")
            }
        };
        // (endpoint, whether it is signal-specific, i.e. used as-is for HTTP)
        let (raw, specific) = match &args.otlp_endpoint {
            Some(e) => (e.clone(), false),
            None => match var("ENDPOINT") {
                Some(v) => v,
                None => return Ok(None),
            },
        };
        let insecure = match (args.otlp_insecure, var("INSECURE")) {
            (true, _) => true,
            (false, Some((v, _))) => parse_bool("OTEL_EXPORTER_OTLP_INSECURE", &v)?,
            (false, None) => false,
        };
        let raw = raw.trim().trim_end_matches('/').to_owned();
        let (tls, endpoint) = if let Some(rest) = raw.strip_prefix("https://") {
            (true, format!("https://{rest}"))
        } else if let Some(rest) = raw.strip_prefix("http://") {
            (false, format!("http://{rest}"))
        } else if raw.contains("://") {
            bail!("OTLP endpoint {raw:?}: only http:// and https:// are supported");
        } else if insecure {
            (false, format!("http://{raw}"))
        } else {
            (true, format!("https://{raw}"))
        };
        let after_scheme = endpoint.split_once("://").map_or("", |(_, r)| r);
        if after_scheme.is_empty() {
            bail!("OTLP endpoint {raw:?} has no host");
        }
        let has_path = after_scheme.contains('/');
        let endpoint = match protocol {
            Protocol::Grpc => endpoint,
            Protocol::HttpProtobuf if specific || has_path => endpoint,
            Protocol::HttpProtobuf => format!("{endpoint}{HTTP_PATH}"),
        };

        let mut headers = match var("HEADERS") {
            Some((v, _)) => parse_pairs("OTEL_EXPORTER_OTLP_HEADERS", &v)?,
            None => Vec::new(),
        };
        for h in &args.otlp_headers {
            let pairs = parse_pairs("--otlp-header", h)?;
            for (k, v) in pairs {
                headers.retain(|(hk, _)| !hk.eq_ignore_ascii_case(&k));
                headers.push((k, v));
            }
        }
        let gzip = match args
            .otlp_compression
            .clone()
            .or_else(|| var("COMPRESSION").map(|v| v.0))
            .as_deref()
            .map(str::trim)
        {
            None | Some("gzip") => true,
            Some("none") => false,
            Some(other) => bail!("OTLP compression {other:?} is not supported (use gzip or none)"),
        };
        let timeout = match (args.otlp_timeout, var("TIMEOUT")) {
            (Some(secs), _) => {
                if !(secs.is_finite() && secs > 0.0 && secs < 3600.0) {
                    bail!("--otlp-timeout must be between 0 and 3600 seconds (got {secs})");
                }
                Duration::from_secs_f64(secs)
            }
            (None, Some((ms, _))) => {
                let ms: u64 = ms.trim().parse().with_context(|| {
                    format!("OTEL_EXPORTER_OTLP_TIMEOUT: {ms:?} is not milliseconds")
                })?;
                if ms == 0 {
                    bail!("OTEL_EXPORTER_OTLP_TIMEOUT must be positive");
                }
                Duration::from_millis(ms)
            }
            (None, None) => DEFAULT_TIMEOUT,
        };
        let file = |flag: &Option<PathBuf>, name: &str| -> Result<Option<PathBuf>> {
            let path = flag
                .clone()
                .or_else(|| var(name).map(|(v, _)| PathBuf::from(v)));
            if let Some(p) = &path {
                std::fs::metadata(p).with_context(|| format!("cannot read {}", p.display()))?;
            }
            Ok(path)
        };
        let ca_file = file(&args.otlp_ca_file, "CERTIFICATE")?;
        let client_cert = file(&args.otlp_client_cert, "CLIENT_CERTIFICATE")?;
        let client_key = file(&args.otlp_client_key, "CLIENT_KEY")?;
        if client_cert.is_some() != client_key.is_some() {
            bail!("a client certificate needs its key and the other way round");
        }
        if !tls && (ca_file.is_some() || client_cert.is_some()) {
            bail!("TLS files were given but the OTLP endpoint {endpoint} is plain http");
        }
        let resource = ResourceSettings {
            host_name,
            service_name: env("OTEL_SERVICE_NAME").filter(|s| !s.trim().is_empty()),
            attributes: match env("OTEL_RESOURCE_ATTRIBUTES") {
                Some(v) => parse_pairs("OTEL_RESOURCE_ATTRIBUTES", &v)?,
                None => Vec::new(),
            },
        };
        if args.spool_max_bytes < 1 << 20 {
            bail!("--spool-max-bytes must be at least 1 MiB");
        }
        Ok(Some(Self {
            protocol,
            endpoint,
            tls,
            headers,
            gzip,
            timeout,
            ca_file,
            client_cert,
            client_key,
            queue_batches: args.otlp_queue.max(1),
            spool_dir: args.spool_dir.clone(),
            spool_max_bytes: args.spool_max_bytes,
            resource,
        }))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use clap::Parser;

    use super::*;
    use crate::cli::{Cli, Command};

    fn resolve(flags: &[&str], env: &[(&str, &str)]) -> Result<Option<OtlpSettings>> {
        let mut args = vec!["profiler", "run"];
        args.extend_from_slice(flags);
        let Command::Run(run) = Cli::try_parse_from(args)?.command else {
            panic!("run")
        };
        let env: HashMap<String, String> = env
            .iter()
            .map(|(k, v)| ((*k).into(), (*v).into()))
            .collect();
        OtlpSettings::resolve(&run.otlp, &|k| env.get(k).cloned(), "host".into())
    }

    #[test]
    fn nothing_configured_means_no_exporter() {
        assert_eq!(resolve(&[], &[]).unwrap(), None);
    }

    #[test]
    fn generic_endpoint_from_env_defaults_to_grpc_gzip() {
        let s = resolve(
            &[],
            &[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4317")],
        )
        .unwrap()
        .unwrap();
        assert_eq!(s.protocol, Protocol::Grpc);
        assert_eq!(s.endpoint, "http://collector:4317");
        assert!(!s.tls && s.gzip);
        assert_eq!(s.timeout, Duration::from_secs(10));
    }

    #[test]
    fn http_paths_follow_the_spec() {
        let generic = resolve(
            &[],
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "https://c:4318/"),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
            ],
        )
        .unwrap()
        .unwrap();
        assert_eq!(generic.endpoint, "https://c:4318/v1development/profiles");
        assert!(generic.tls);
        let specific = resolve(
            &[],
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://ignored:1"),
                (
                    "OTEL_EXPORTER_OTLP_PROFILES_ENDPOINT",
                    "http://c:4318/custom/path",
                ),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
            ],
        )
        .unwrap()
        .unwrap();
        assert_eq!(specific.endpoint, "http://c:4318/custom/path");
    }

    #[test]
    fn flags_win_over_env() {
        let s = resolve(
            &[
                "--otlp-endpoint",
                "127.0.0.1:4317",
                "--otlp-insecure",
                "--otlp-header",
                "authorization=Bearer%20flag",
                "--otlp-timeout",
                "2.5",
                "--otlp-compression",
                "none",
            ],
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "https://env:4317"),
                (
                    "OTEL_EXPORTER_OTLP_HEADERS",
                    "Authorization=env,x-tenant=a%2Cb",
                ),
                ("OTEL_EXPORTER_OTLP_TIMEOUT", "500"),
                ("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip"),
            ],
        )
        .unwrap()
        .unwrap();
        assert_eq!(s.endpoint, "http://127.0.0.1:4317");
        assert!(!s.tls && !s.gzip);
        assert_eq!(s.timeout, Duration::from_millis(2500));
        assert_eq!(
            s.headers,
            [
                ("x-tenant".to_owned(), "a,b".to_owned()),
                ("authorization".to_owned(), "Bearer flag".to_owned()),
            ]
        );
    }

    #[test]
    fn env_timeout_is_milliseconds_and_resource_env_is_read() {
        let s = resolve(
            &[],
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317"),
                ("OTEL_EXPORTER_OTLP_PROFILES_TIMEOUT", "1500"),
                ("OTEL_SERVICE_NAME", "api"),
                (
                    "OTEL_RESOURCE_ATTRIBUTES",
                    "deployment.environment=prod, team=core%20infra",
                ),
            ],
        )
        .unwrap()
        .unwrap();
        assert_eq!(s.timeout, Duration::from_millis(1500));
        assert_eq!(s.resource.service_name.as_deref(), Some("api"));
        assert_eq!(
            s.resource.attributes,
            [
                ("deployment.environment".to_owned(), "prod".to_owned()),
                ("team".to_owned(), "core infra".to_owned()),
            ]
        );
    }

    #[test]
    fn bad_values_are_errors() {
        let e = |flags: &[&str], env: &[(&str, &str)]| resolve(flags, env).unwrap_err().to_string();
        assert!(e(&["--otlp-endpoint", "ftp://x"], &[]).contains("only http:// and https://"));
        assert!(
            e(
                &[
                    "--otlp-endpoint",
                    "http://x",
                    "--otlp-protocol",
                    "http/json"
                ],
                &[]
            )
            .contains("not supported")
        );
        assert!(
            e(
                &[],
                &[
                    ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://x"),
                    ("OTEL_EXPORTER_OTLP_TIMEOUT", "soon")
                ]
            )
            .contains("milliseconds")
        );
        assert!(
            e(
                &[],
                &[
                    ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://x"),
                    ("OTEL_EXPORTER_OTLP_HEADERS", "novalue")
                ]
            )
            .contains("key=value")
        );
        assert!(
            e(
                &[
                    "--otlp-endpoint",
                    "http://x",
                    "--otlp-ca-file",
                    "/nonexistent.pem"
                ],
                &[]
            )
            .contains("cannot read")
        );
    }
}
