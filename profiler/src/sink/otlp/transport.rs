//! Sends one already-encoded `ExportProfilesServiceRequest` over gRPC
//! (tonic, `ProfilesService/Export`) or HTTP/protobuf (reqwest, `POST
//! .../v1development/profiles`), with gzip, TLS (rustls: CA file, client
//! certificate and key) and headers, and classifies the outcome the way the
//! OTLP specification does: delivered (with any partial success), retryable
//! (with the server's delay hint), or permanent.
//!
//! The body is encoded once by the pipeline and may come from the spool, so
//! gRPC uses a pass-through codec instead of re-encoding a message.

use std::time::Duration;

use anyhow::{Context, Result};
use bytes::{Buf, BufMut, Bytes};
use opentelemetry_proto::tonic::collector::profiles::v1development::ExportProfilesServiceResponse;
use prost::Message;
use tonic::{
    Code, Status,
    codec::{Codec, CompressionEncoding, DecodeBuf, Decoder, EncodeBuf, Encoder},
    metadata::{MetadataKey, MetadataMap, MetadataValue},
    transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity},
};
use tonic_types::StatusExt;

use crate::config::otlp::{OtlpSettings, Protocol};

/// The result of one export attempt.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Accepted; `rejected` profiles were refused (partial success).
    Delivered { rejected: i64, message: String },
    /// Try again later, after at least `after` if the server said so.
    Retry {
        after: Option<Duration>,
        reason: String,
    },
    /// The collector will never take this batch.
    Permanent { reason: String },
}

const GRPC_PATH: &str =
    "/opentelemetry.proto.collector.profiles.v1development.ProfilesService/Export";

/// Pass-through encoder: the request is already protobuf bytes.
#[derive(Clone, Copy, Debug, Default)]
struct RawCodec;

struct RawEncoder;
struct ResponseDecoder;

impl Encoder for RawEncoder {
    type Item = Bytes;
    type Error = Status;
    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put(item);
        Ok(())
    }
}

impl Decoder for ResponseDecoder {
    type Item = ExportProfilesServiceResponse;
    type Error = Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Self::Item>, Status> {
        let bytes = src.copy_to_bytes(src.remaining());
        ExportProfilesServiceResponse::decode(bytes)
            .map(Some)
            .map_err(|e| Status::internal(format!("undecodable export response: {e}")))
    }
}

impl Codec for RawCodec {
    type Encode = Bytes;
    type Decode = ExportProfilesServiceResponse;
    type Encoder = RawEncoder;
    type Decoder = ResponseDecoder;
    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }
    fn decoder(&mut self) -> ResponseDecoder {
        ResponseDecoder
    }
}

fn delivered(resp: Option<ExportProfilesServiceResponse>) -> Outcome {
    let partial = resp.and_then(|r| r.partial_success).unwrap_or_default();
    Outcome::Delivered {
        rejected: partial.rejected_profiles,
        message: partial.error_message,
    }
}

/// The OTLP spec's retryable gRPC codes; RESOURCE_EXHAUSTED only when the
/// server sent RetryInfo (it can recover). A status made on this side from a
/// transport failure (the connection or TLS handshake broke before any
/// answer: `Unknown` with an underlying error) is retried too.
pub fn classify_grpc(status: &Status) -> Outcome {
    let after = status.get_details_retry_info().and_then(|r| r.retry_delay);
    let reason = match std::error::Error::source(status) {
        Some(e) => format!("gRPC {:?}: {}: {e}", status.code(), status.message()),
        None => format!("gRPC {:?}: {}", status.code(), status.message()),
    };
    if status.code() == Code::Unknown && std::error::Error::source(status).is_some() {
        return Outcome::Retry { after, reason };
    }
    match status.code() {
        Code::Cancelled
        | Code::DeadlineExceeded
        | Code::Aborted
        | Code::OutOfRange
        | Code::Unavailable
        | Code::DataLoss => Outcome::Retry { after, reason },
        Code::ResourceExhausted if after.is_some() => Outcome::Retry { after, reason },
        _ => Outcome::Permanent { reason },
    }
}

/// Retry-After as seconds or an HTTP date.
pub fn parse_retry_after(v: &str, now: std::time::SystemTime) -> Option<Duration> {
    let v = v.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(v).ok()?;
    Some(at.duration_since(now).unwrap_or_default())
}

/// The OTLP spec's retryable HTTP statuses.
pub fn classify_http(status: u16, retry_after: Option<&str>, body: &[u8]) -> Outcome {
    match status {
        200..=299 => delivered(ExportProfilesServiceResponse::decode(body).ok()),
        429 | 502 | 503 | 504 => Outcome::Retry {
            after: retry_after.and_then(|v| parse_retry_after(v, std::time::SystemTime::now())),
            reason: format!("HTTP {status}"),
        },
        _ => Outcome::Permanent {
            reason: format!(
                "HTTP {status}: {}",
                String::from_utf8_lossy(&body[..body.len().min(200)])
            ),
        },
    }
}

/// A configured gRPC client.
pub struct GrpcClient {
    grpc: tonic::client::Grpc<Channel>,
    headers: MetadataMap,
    timeout: Duration,
}

/// A configured client.
pub enum Transport {
    Grpc(Box<GrpcClient>),
    Http {
        client: reqwest::Client,
        url: String,
        gzip: bool,
    },
}

fn read(path: &std::path::Path) -> Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))
}

impl Transport {
    /// A client for `s`; connects lazily, so a collector that is down at
    /// start is not an error.
    pub fn new(s: &OtlpSettings) -> Result<Self> {
        match s.protocol {
            Protocol::Grpc => {
                let mut ep = Endpoint::from_shared(s.endpoint.clone())
                    .with_context(|| format!("invalid OTLP endpoint {}", s.endpoint))?
                    .connect_timeout(s.timeout)
                    .timeout(s.timeout);
                if s.tls {
                    let mut tls = ClientTlsConfig::new().with_webpki_roots();
                    if let Some(ca) = &s.ca_file {
                        tls = tls.ca_certificate(Certificate::from_pem(read(ca)?));
                    }
                    if let (Some(cert), Some(key)) = (&s.client_cert, &s.client_key) {
                        tls = tls.identity(Identity::from_pem(read(cert)?, read(key)?));
                    }
                    ep = ep.tls_config(tls).context("OTLP TLS configuration")?;
                }
                let mut grpc = tonic::client::Grpc::new(ep.connect_lazy());
                if s.gzip {
                    grpc = grpc
                        .send_compressed(CompressionEncoding::Gzip)
                        .accept_compressed(CompressionEncoding::Gzip);
                }
                let mut headers = MetadataMap::new();
                for (k, v) in &s.headers {
                    let key = MetadataKey::from_bytes(k.to_ascii_lowercase().as_bytes())
                        .with_context(|| format!("invalid OTLP header name {k:?}"))?;
                    let value = MetadataValue::try_from(v.as_str())
                        .with_context(|| format!("invalid value for OTLP header {k:?}"))?;
                    headers.insert(key, value);
                }
                Ok(Transport::Grpc(Box::new(GrpcClient {
                    grpc,
                    headers,
                    timeout: s.timeout,
                })))
            }
            Protocol::HttpProtobuf => {
                let mut headers = reqwest::header::HeaderMap::new();
                for (k, v) in &s.headers {
                    let name = reqwest::header::HeaderName::from_bytes(k.as_bytes())
                        .with_context(|| format!("invalid OTLP header name {k:?}"))?;
                    let value = reqwest::header::HeaderValue::from_str(v)
                        .with_context(|| format!("invalid value for OTLP header {k:?}"))?;
                    headers.insert(name, value);
                }
                let mut b = reqwest::Client::builder()
                    .timeout(s.timeout)
                    .connect_timeout(s.timeout)
                    .default_headers(headers)
                    .use_rustls_tls();
                if let Some(ca) = &s.ca_file {
                    b = b.add_root_certificate(
                        reqwest::Certificate::from_pem(&read(ca)?).context("OTLP CA file")?,
                    );
                }
                if let (Some(cert), Some(key)) = (&s.client_cert, &s.client_key) {
                    let mut pem = read(cert)?;
                    pem.extend_from_slice(&read(key)?);
                    b = b.identity(
                        reqwest::Identity::from_pem(&pem).context("OTLP client certificate")?,
                    );
                }
                Ok(Transport::Http {
                    client: b.build().context("OTLP HTTP client")?,
                    url: s.endpoint.clone(),
                    gzip: s.gzip,
                })
            }
        }
    }

    /// One export attempt of the encoded request `body`.
    pub async fn send(&mut self, body: Bytes) -> Outcome {
        match self {
            Transport::Grpc(client) => {
                let GrpcClient {
                    grpc,
                    headers,
                    timeout,
                } = &mut **client;
                if let Err(e) = grpc.ready().await {
                    return Outcome::Retry {
                        after: None,
                        reason: format!("gRPC connection: {e}"),
                    };
                }
                let mut req = tonic::Request::new(body);
                *req.metadata_mut() = headers.clone();
                req.set_timeout(*timeout);
                let path = tonic::codegen::http::uri::PathAndQuery::from_static(GRPC_PATH);
                match grpc.unary(req, path, RawCodec).await {
                    Ok(resp) => delivered(Some(resp.into_inner())),
                    Err(status) => classify_grpc(&status),
                }
            }
            Transport::Http { client, url, gzip } => {
                let mut req = client
                    .post(url.as_str())
                    .header(reqwest::header::CONTENT_TYPE, "application/x-protobuf");
                req = if *gzip {
                    req.header(reqwest::header::CONTENT_ENCODING, "gzip")
                        .body(gzip_bytes(&body))
                } else {
                    req.body(body)
                };
                match req.send().await {
                    Err(e) => Outcome::Retry {
                        after: None,
                        reason: format!("HTTP request: {e}"),
                    },
                    Ok(resp) => {
                        let status = resp.status().as_u16();
                        let retry_after = resp
                            .headers()
                            .get(reqwest::header::RETRY_AFTER)
                            .and_then(|v| v.to_str().ok())
                            .map(str::to_owned);
                        let body = resp.bytes().await.unwrap_or_default();
                        classify_http(status, retry_after.as_deref(), &body)
                    }
                }
            }
        }
    }
}

fn gzip_bytes(body: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(body).expect("writing to a Vec cannot fail");
    gz.finish().expect("writing to a Vec cannot fail")
}

#[cfg(test)]
mod tests {
    use opentelemetry_proto::tonic::collector::profiles::v1development::ExportProfilesPartialSuccess;

    use super::*;

    #[test]
    fn grpc_codes_follow_the_spec() {
        let retry = |s: &Status| matches!(classify_grpc(s), Outcome::Retry { .. });
        assert!(retry(&Status::unavailable("down")));
        assert!(retry(&Status::deadline_exceeded("slow")));
        assert!(!retry(&Status::invalid_argument("bad")));
        assert!(!retry(&Status::unauthenticated("who")));
        // Unknown from the server is permanent; from a broken transport, not.
        assert!(!retry(&Status::unknown("server says so")));
        let broken = Status::from_error(Box::new(std::io::Error::other("handshake failed")));
        assert_eq!(broken.code(), Code::Unknown);
        assert!(retry(&broken));
        // RESOURCE_EXHAUSTED without RetryInfo is permanent; with it, retried after the delay.
        assert!(!retry(&Status::resource_exhausted("full")));
        let with_info = Status::with_error_details(
            Code::ResourceExhausted,
            "full",
            tonic_types::ErrorDetails::with_retry_info(Some(Duration::from_secs(3))),
        );
        assert_eq!(
            classify_grpc(&with_info),
            Outcome::Retry {
                after: Some(Duration::from_secs(3)),
                reason: "gRPC ResourceExhausted: full".into()
            }
        );
    }

    #[test]
    fn http_statuses_follow_the_spec() {
        let resp = ExportProfilesServiceResponse {
            partial_success: Some(ExportProfilesPartialSuccess {
                rejected_profiles: 2,
                error_message: "too old".into(),
            }),
        };
        assert_eq!(
            classify_http(200, None, &resp.encode_to_vec()),
            Outcome::Delivered {
                rejected: 2,
                message: "too old".into()
            }
        );
        assert_eq!(
            classify_http(200, None, b""),
            Outcome::Delivered {
                rejected: 0,
                message: String::new()
            }
        );
        assert_eq!(
            classify_http(503, Some("7"), b""),
            Outcome::Retry {
                after: Some(Duration::from_secs(7)),
                reason: "HTTP 503".into()
            }
        );
        assert!(matches!(
            classify_http(429, None, b""),
            Outcome::Retry { after: None, .. }
        ));
        assert!(matches!(
            classify_http(400, None, b"bad"),
            Outcome::Permanent { .. }
        ));
    }

    #[test]
    fn retry_after_dates() {
        let now = httpdate::parse_http_date("Wed, 25 Nov 2026 15:00:00 GMT").unwrap();
        assert_eq!(
            parse_retry_after("Wed, 25 Nov 2026 15:00:09 GMT", now),
            Some(Duration::from_secs(9))
        );
        assert_eq!(
            parse_retry_after("Wed, 25 Nov 2026 14:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
    }
}
