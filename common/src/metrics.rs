//! Prometheus metrics for the long-running binaries. Both the coordinator and the worker expose
//! `GET /metrics` in the Prometheus text format (0.0.4); this module holds the one small,
//! dependency-free renderer they share ([`MetricsText`]: HELP/TYPE lines, label escaping, value
//! formatting) and the tiny HTTP server that serves a rendered page ([`serve`]), so neither
//! binary needs a metrics library or its global registry.
use std::fmt::Write as _;
use std::future::Future;
use std::net::SocketAddr;

/// `Content-Type` of the Prometheus text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A page of metrics in the Prometheus text format, built family by family.
#[derive(Debug, Default, Clone)]
pub struct MetricsText {
    out: String,
}

impl MetricsText {
    /// An empty page.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends a gauge family: its HELP and TYPE lines, then one line per sample.
    pub fn gauge<'a, L>(
        &mut self,
        name: &str,
        help: &str,
        samples: impl IntoIterator<Item = (L, f64)>,
    ) -> &mut Self
    where
        L: AsRef<[(&'a str, &'a str)]>,
    {
        self.family(name, help, "gauge", samples)
    }

    /// Appends a counter family (by convention `name` ends in `_total`).
    pub fn counter<'a, L>(
        &mut self,
        name: &str,
        help: &str,
        samples: impl IntoIterator<Item = (L, f64)>,
    ) -> &mut Self
    where
        L: AsRef<[(&'a str, &'a str)]>,
    {
        self.family(name, help, "counter", samples)
    }

    fn family<'a, L>(
        &mut self,
        name: &str,
        help: &str,
        kind: &str,
        samples: impl IntoIterator<Item = (L, f64)>,
    ) -> &mut Self
    where
        L: AsRef<[(&'a str, &'a str)]>,
    {
        debug_assert!(valid_name(name), "invalid metric name {name:?}");
        // Writing to a String cannot fail.
        let _ = writeln!(self.out, "# HELP {name} {}", escape_help(help));
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
        for (labels, value) in samples {
            self.out.push_str(name);
            let labels = labels.as_ref();
            if !labels.is_empty() {
                self.out.push('{');
                for (i, (k, v)) in labels.iter().enumerate() {
                    debug_assert!(valid_name(k), "invalid label name {k:?}");
                    if i > 0 {
                        self.out.push(',');
                    }
                    let _ = write!(self.out, "{k}=\"{}\"", escape_label_value(v));
                }
                self.out.push('}');
            }
            self.out.push(' ');
            self.out.push_str(&format_value(value));
            self.out.push('\n');
        }
        self
    }

    /// The page.
    pub fn finish(self) -> String {
        self.out
    }
}

/// No labels, for a single unlabelled sample.
pub const NO_LABELS: [(&str, &str); 0] = [];

/// Escapes a label value: backslash, double quote and line feed.
pub fn escape_label_value(v: &str) -> String {
    let mut s = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => s.push_str("\\\\"),
            '"' => s.push_str("\\\""),
            '\n' => s.push_str("\\n"),
            c => s.push(c),
        }
    }
    s
}

/// Escapes HELP text: backslash and line feed.
fn escape_help(v: &str) -> String {
    v.replace('\\', "\\\\").replace('\n', "\\n")
}

fn format_value(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v == f64::INFINITY {
        "+Inf".into()
    } else if v == f64::NEG_INFINITY {
        "-Inf".into()
    } else {
        format!("{v}")
    }
}

fn valid_name(n: &str) -> bool {
    let mut chars = n.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// Binds `addr` for [`serve`]; binding first lets a bad address fail at start-up.
pub async fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await
}

/// Serves `GET /metrics` on `listener` until the task is dropped, rendering the page with
/// `render` on every scrape. A render error is logged and answered with 500.
pub fn serve<F, Fut>(listener: tokio::net::TcpListener, render: F) -> tokio::task::JoinHandle<()>
where
    F: Fn() -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<String, String>> + Send + 'static,
{
    use axum::http::{StatusCode, header};
    use axum::response::IntoResponse;
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let render = render.clone();
            async move {
                match render().await {
                    Ok(body) => ([(header::CONTENT_TYPE, CONTENT_TYPE)], body).into_response(),
                    Err(e) => {
                        tracing::error!(error = %e, "rendering metrics");
                        (StatusCode::INTERNAL_SERVER_ERROR, "metrics unavailable\n").into_response()
                    }
                }
            }
        }),
    );
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "metrics server stopped");
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_help_type_and_samples() {
        let mut m = MetricsText::new();
        m.gauge("up", "Whether it runs.", [(NO_LABELS, 1.0)]);
        m.counter(
            "files_total",
            "Files.",
            [
                (&[("kind", "backup"), ("state", "DONE")][..], 3.0),
                (&[("kind", "restore"), ("state", "FAILED")][..], 0.0),
            ],
        );
        m.gauge(
            "empty",
            "No samples yet.",
            Vec::<(Vec<(&str, &str)>, f64)>::new(),
        );
        assert_eq!(
            m.finish(),
            "# HELP up Whether it runs.\n\
             # TYPE up gauge\n\
             up 1\n\
             # HELP files_total Files.\n\
             # TYPE files_total counter\n\
             files_total{kind=\"backup\",state=\"DONE\"} 3\n\
             files_total{kind=\"restore\",state=\"FAILED\"} 0\n\
             # HELP empty No samples yet.\n\
             # TYPE empty gauge\n"
        );
    }

    #[test]
    fn escapes_label_values_and_help() {
        let mut m = MetricsText::new();
        let cluster = String::from("a\\b\"c\nd");
        m.gauge(
            "x",
            "line one\nback\\slash",
            vec![(vec![("cluster", cluster.as_str())], 2.0)],
        );
        assert_eq!(
            m.finish(),
            "# HELP x line one\\nback\\\\slash\n\
             # TYPE x gauge\n\
             x{cluster=\"a\\\\b\\\"c\\nd\"} 2\n"
        );
        assert_eq!(escape_label_value("plain ünïcode"), "plain ünïcode");
    }

    #[test]
    fn formats_values() {
        assert_eq!(format_value(0.0), "0");
        assert_eq!(format_value(1_700_000_000.123), "1700000000.123");
        assert_eq!(format_value(12_345_678_901_234.0), "12345678901234");
        assert_eq!(format_value(f64::NAN), "NaN");
        assert_eq!(format_value(f64::INFINITY), "+Inf");
        assert_eq!(format_value(f64::NEG_INFINITY), "-Inf");
    }

    #[test]
    fn validates_names() {
        assert!(valid_name("ringvault_runs"));
        assert!(valid_name("a:b_c9"));
        assert!(!valid_name("9a"));
        assert!(!valid_name("a-b"));
        assert!(!valid_name(""));
    }

    #[tokio::test]
    async fn serves_metrics_over_http() -> anyhow_free::Result {
        let listener = bind("127.0.0.1:0".parse()?).await?;
        let addr = listener.local_addr()?;
        let task = serve(listener, || async { Ok("up 1\n".to_string()) });
        let body = raw_get(addr, "/metrics").await?;
        assert!(body.starts_with("HTTP/1.1 200"), "{body}");
        assert!(
            body.to_ascii_lowercase()
                .contains("content-type: text/plain; version=0.0.4"),
            "{body}"
        );
        assert!(body.ends_with("up 1\n"), "{body}");
        let missing = raw_get(addr, "/other").await?;
        assert!(missing.starts_with("HTTP/1.1 404"), "{missing}");
        task.abort();
        Ok(())
    }

    async fn raw_get(addr: SocketAddr, path: &str) -> anyhow_free::Result<String> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(addr).await?;
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await?;
        let mut out = String::new();
        s.read_to_string(&mut out).await?;
        Ok(out)
    }

    /// common has no anyhow; tests only need a boxed error.
    mod anyhow_free {
        pub type Result<T = ()> = std::result::Result<T, Box<dyn std::error::Error>>;
    }
}
