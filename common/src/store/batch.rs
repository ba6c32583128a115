//! Batched deletes over `multipart/mixed`: the body format shared by GCS's JSON batch endpoint
//! (`POST /batch/storage/v1`, 100 calls per request) and Azure's Blob Batch
//! (`POST <container>?restype=container&comp=batch`, 256 calls per request).
//!
//! Each part of the request is one HTTP sub-request (`application/http`) carrying a
//! `Content-ID`; the answer is a `multipart/mixed` body with one sub-response per part, matched
//! back by that id. A batch is only as good as its worst part: [`check_deletes`] turns the
//! sub-responses into one result, where a missing answer is a failure and an object already
//! gone (404) is a success, as for single deletes. Backends build the sub-requests (paths and
//! per-part credentials differ) and send the body; the format lives here once.
use super::{StoreError, StoreResult};

/// Batch requests in flight at once.
const IN_FLIGHT: usize = 4;

/// Sends `names` as batches of at most `max`, [`IN_FLIGHT`] at once, through `send`; the first
/// failure is returned.
pub(crate) async fn in_batches<F, Fut>(names: Vec<String>, max: usize, send: F) -> StoreResult<()>
where
    F: Fn(Vec<String>) -> Fut,
    Fut: std::future::Future<Output = StoreResult<()>>,
{
    use futures::{StreamExt, TryStreamExt};
    let chunks: Vec<Vec<String>> = names.chunks(max).map(<[String]>::to_vec).collect();
    futures::stream::iter(chunks)
        .map(send)
        .buffer_unordered(IN_FLIGHT)
        .try_collect::<Vec<()>>()
        .await
        .map(|_| ())
}

/// Error codes of a 404 that mean the object itself is absent.
const OBJECT_NOT_FOUND: &[&str] = &["BlobNotFound"];

/// One sub-request of a batch: `METHOD path?query HTTP/1.1` and its headers.
pub(crate) struct SubRequest {
    pub method: &'static str,
    /// Absolute path with its query, already percent-encoded.
    pub target: String,
    pub headers: Vec<(&'static str, String)>,
}

/// A request body and the `Content-Type` that names its boundary.
pub(crate) struct BatchBody {
    pub content_type: String,
    pub body: String,
}

/// The answer to one sub-request. `index` is `None` for a part without a usable
/// `Content-ID` (Azure answers a batch it rejects whole with one such part).
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct SubResponse {
    pub index: Option<usize>,
    pub status: u16,
    /// The service's error code header, when it sends one (`x-ms-error-code`).
    pub error_code: Option<String>,
    /// Status line and error-code headers, for error messages.
    pub detail: String,
}

/// How a backend writes part ids: Azure wants a bare integer, GCS's examples use `<…+N>`
/// (echoed back as `<response-…+N>`); [`decode`] reads both.
#[derive(Clone, Copy)]
pub(crate) enum ContentIds {
    Bare,
    Angle,
}

/// Builds the `multipart/mixed` body for `requests`; part `i` has Content-ID `i`.
pub(crate) fn encode(requests: &[SubRequest], ids: ContentIds) -> BatchBody {
    let boundary = format!("batch_{}", uuid::Uuid::new_v4().simple());
    let mut body = String::with_capacity(requests.len() * 256);
    for (i, r) in requests.iter().enumerate() {
        let id = match ids {
            ContentIds::Bare => i.to_string(),
            ContentIds::Angle => format!("<rv+{i}>"),
        };
        body.push_str(&format!(
            "--{boundary}\r\nContent-Type: application/http\r\n\
             Content-Transfer-Encoding: binary\r\nContent-ID: {id}\r\n\r\n\
             {} {} HTTP/1.1\r\n",
            r.method, r.target
        ));
        for (name, value) in &r.headers {
            body.push_str(&format!("{name}: {value}\r\n"));
        }
        // The CRLF before the next delimiter belongs to the delimiter: the blank line that
        // ends the sub-request's headers needs one more.
        body.push_str("Content-Length: 0\r\n\r\n\r\n");
    }
    body.push_str(&format!("--{boundary}--\r\n"));
    BatchBody {
        content_type: format!("multipart/mixed; boundary={boundary}"),
        body,
    }
}

/// Reads the sub-responses of a `multipart/mixed` answer whose `Content-Type` is
/// `content_type`.
pub(crate) fn decode(content_type: &str, body: &str) -> Result<Vec<SubResponse>, String> {
    let boundary = content_type
        .split(';')
        .map(str::trim)
        .find_map(|p| {
            p.get(..9)
                .filter(|k| k.eq_ignore_ascii_case("boundary="))
                .map(|_| p[9..].trim_matches('"'))
        })
        .filter(|b| !b.is_empty())
        .ok_or_else(|| format!("batch answer is not multipart (Content-Type {content_type:?})"))?;
    let delimiter = format!("--{boundary}");
    let mut out = Vec::new();
    // The text before the first delimiter is a preamble; a part starting with `--` closes.
    for part in body.split(delimiter.as_str()).skip(1) {
        if part.starts_with("--") {
            break;
        }
        let part = part.trim_start_matches(['\r', '\n']);
        let (head, rest) = split_blank_line(part);
        let index = head.lines().find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.trim()
                .eq_ignore_ascii_case("content-id")
                .then(|| parse_content_id(value))
                .flatten()
        });
        let status_line = rest
            .lines()
            .find(|l| l.starts_with("HTTP/"))
            .ok_or_else(|| format!("batch answer part has no status line: {:.200}", part))?;
        let status = status_line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse::<u16>().ok())
            .ok_or_else(|| format!("unreadable status line {status_line:?}"))?;
        // The status line and any error-code header (Azure's `x-ms-error-code`).
        let mut detail = status_line.trim().to_string();
        let mut error_code = None;
        let headers = rest
            .lines()
            .skip_while(|l| !l.starts_with("HTTP/"))
            .skip(1)
            .take_while(|l| !l.trim().is_empty());
        for l in headers {
            let Some((name, value)) = l.split_once(':') else {
                continue;
            };
            let name = name.trim().to_ascii_lowercase();
            if name.contains("error") {
                detail.push_str("; ");
                detail.push_str(l.trim());
            }
            if name.ends_with("error-code") {
                error_code = Some(value.trim().to_string());
            }
        }
        out.push(SubResponse {
            index,
            status,
            error_code,
            detail: detail.chars().take(400).collect(),
        });
    }
    Ok(out)
}

fn split_blank_line(s: &str) -> (&str, &str) {
    for sep in ["\r\n\r\n", "\n\n"] {
        if let Some(i) = s.find(sep) {
            return (&s[..i], &s[i + sep.len()..]);
        }
    }
    (s, "")
}

/// `0`, `<rv+0>` and `<response-rv+0>` all name part 0.
fn parse_content_id(value: &str) -> Option<usize> {
    let v = value.trim().trim_start_matches('<').trim_end_matches('>');
    let v = v.rsplit_once('+').map_or(v, |(_, n)| n);
    v.trim().parse().ok()
}

/// The outcome of a batch of deletes of `names` (part `i` deletes `names[i]`): every part must
/// be answered with 2xx, or 404 for the object itself (a 404 whose error code names something
/// else, e.g. Azure's `ContainerNotFound` when a path is wrong, is a failure: the blob may well
/// still exist). The first failure is returned, transient when its status is
/// (so the whole batch is retried: deletes are idempotent).
pub(crate) fn check_deletes(names: &[String], responses: &[SubResponse]) -> StoreResult<()> {
    let mut answered = vec![false; names.len()];
    for r in responses {
        let gone = r.status == 404
            && r.error_code
                .as_deref()
                .is_none_or(|c| OBJECT_NOT_FOUND.contains(&c));
        let ok = (200..300).contains(&r.status) || gone;
        match r.index.filter(|&i| i < names.len()) {
            Some(i) if ok => answered[i] = true,
            Some(i) => {
                return Err(StoreError::http(
                    "delete",
                    &names[i],
                    r.status,
                    format!("batch delete: {}", r.detail),
                ));
            }
            None if ok => {}
            None => {
                return Err(StoreError::http(
                    "delete",
                    names.first().map_or("", String::as_str),
                    r.status,
                    format!("batch of {} deletes refused: {}", names.len(), r.detail),
                ));
            }
        }
    }
    match answered.iter().position(|a| !a) {
        None => Ok(()),
        Some(i) => Err(StoreError::Transient {
            op: "delete",
            key: names[i].clone(),
            message: format!(
                "batch delete: no answer for this object ({} of {} parts answered)",
                responses.len(),
                names.len()
            ),
        }),
    }
}

/// Sends a batch request and reads its sub-responses; an HTTP failure of the batch itself is
/// reported for its first object.
pub(crate) async fn send(
    req: reqwest::RequestBuilder,
    body: BatchBody,
    first: &str,
) -> StoreResult<Vec<SubResponse>> {
    let resp = req
        .header(reqwest::header::CONTENT_TYPE, body.content_type)
        .body(body.body)
        .send()
        .await
        .map_err(super::reqwest_err("delete", first))?;
    let status = resp.status().as_u16();
    let content_type = resp
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let text = resp
        .text()
        .await
        .map_err(super::reqwest_err("delete", first))?;
    if !(200..300).contains(&status) {
        let detail: String = text.chars().take(300).collect();
        return Err(StoreError::http(
            "delete",
            first,
            status,
            format!("batch delete: HTTP {status}: {detail}"),
        ));
    }
    decode(&content_type, &text).map_err(|message| StoreError::Backend {
        op: "delete",
        key: first.to_string(),
        message,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn del(path: &str) -> SubRequest {
        SubRequest {
            method: "DELETE",
            target: path.into(),
            headers: vec![("x-ms-date", "Thu, 26 Nov 2026 00:00:00 GMT".into())],
        }
    }

    #[test]
    fn encoded_parts_carry_ids_request_lines_and_a_closing_delimiter() {
        let b = encode(&[del("/c/a"), del("/c/b%20c?sv=1")], ContentIds::Bare);
        let boundary = b.content_type.rsplit('=').next().expect("boundary");
        assert_eq!(b.body.matches(&format!("--{boundary}\r\n")).count(), 2);
        assert!(b.body.ends_with(&format!("--{boundary}--\r\n")));
        assert!(
            b.body
                .contains("Content-ID: 1\r\n\r\nDELETE /c/b%20c?sv=1 HTTP/1.1\r\n")
        );
        assert!(
            b.body
                .contains("x-ms-date: Thu, 26 Nov 2026 00:00:00 GMT\r\n")
        );
        let angle = encode(&[del("/o")], ContentIds::Angle);
        assert!(angle.body.contains("Content-ID: <rv+0>\r\n"));
    }

    const AZURE_ANSWER: &str = "--batchresponse_66925647\r\n\
        Content-Type: application/http\r\nContent-ID: 0\r\n\r\n\
        HTTP/1.1 202 Accepted\r\nx-ms-delete-type-permanent: true\r\n\r\n\
        --batchresponse_66925647\r\n\
        Content-Type: application/http\r\nContent-ID: 1\r\n\r\n\
        HTTP/1.1 404 The specified blob does not exist.\r\nx-ms-error-code: BlobNotFound\r\n\r\n\
        --batchresponse_66925647\r\n\
        Content-Type: application/http\r\nContent-ID: 2\r\n\r\n\
        HTTP/1.1 403 Forbidden\r\nx-ms-error-code: AuthorizationPermissionMismatch\r\n\r\n\
        --batchresponse_66925647--";

    #[test]
    fn azure_answers_decode_by_content_id() {
        let r = decode(
            "multipart/mixed; boundary=batchresponse_66925647",
            AZURE_ANSWER,
        )
        .expect("decoded");
        let got: Vec<(Option<usize>, u16)> = r.iter().map(|s| (s.index, s.status)).collect();
        assert_eq!(got, [(Some(0), 202), (Some(1), 404), (Some(2), 403)]);
        assert!(r[2].detail.contains("AuthorizationPermissionMismatch"));
        assert_eq!(r[1].error_code.as_deref(), Some("BlobNotFound"));
        assert_eq!(r[0].error_code, None);
    }

    #[test]
    fn gcs_answers_decode_angle_ids_and_quoted_boundaries() {
        let body = "--b1\r\nContent-Type: application/http\r\nContent-ID: <response-rv+1>\r\n\r\n\
            HTTP/1.1 204 No Content\r\n\r\n--b1\r\nContent-Type: application/http\r\n\
            Content-ID: <response-rv+0>\r\n\r\nHTTP/1.1 503 Service Unavailable\r\n\r\n--b1--\r\n";
        let r = decode("multipart/mixed; boundary=\"b1\"", body).expect("decoded");
        let got: Vec<(Option<usize>, u16)> = r.iter().map(|s| (s.index, s.status)).collect();
        assert_eq!(got, [(Some(1), 204), (Some(0), 503)]);
    }

    #[test]
    fn a_non_multipart_answer_is_an_error() {
        assert!(decode("application/json", "{}").is_err());
        assert!(
            decode(
                "multipart/mixed; boundary=x",
                "--x\r\nContent-ID: 0\r\n\r\nnope\r\n--x--"
            )
            .is_err()
        );
    }

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("blob{i}")).collect()
    }

    fn answer(index: Option<usize>, status: u16) -> SubResponse {
        SubResponse {
            index,
            status,
            error_code: None,
            detail: format!("HTTP/1.1 {status}"),
        }
    }

    #[test]
    fn deletes_succeed_only_when_every_part_is_done_or_already_gone() {
        let n = names(2);
        assert!(check_deletes(&n, &[answer(Some(1), 404), answer(Some(0), 202)]).is_ok());

        let missing = check_deletes(&n, &[answer(Some(0), 202)]).expect_err("part 1 unanswered");
        assert!(missing.is_transient());
        assert!(missing.to_string().contains("blob1"), "{missing}");

        let denied =
            check_deletes(&n, &[answer(Some(0), 202), answer(Some(1), 403)]).expect_err("403");
        assert!(!denied.is_transient());
        assert!(denied.to_string().contains("blob1"), "{denied}");

        let busy =
            check_deletes(&n, &[answer(Some(0), 503), answer(Some(1), 202)]).expect_err("503");
        assert!(busy.is_transient());

        let mut wrong_place = answer(Some(1), 404);
        wrong_place.error_code = Some("ContainerNotFound".into());
        let err = check_deletes(&n, &[answer(Some(0), 202), wrong_place])
            .expect_err("a 404 for the container is not a deleted blob");
        assert!(err.to_string().contains("blob1"), "{err}");
        let mut blob_gone = answer(Some(1), 404);
        blob_gone.error_code = Some("BlobNotFound".into());
        assert!(check_deletes(&n, &[answer(Some(0), 202), blob_gone]).is_ok());

        let whole = check_deletes(&n, &[answer(None, 400)]).expect_err("batch refused");
        assert!(
            whole.to_string().contains("batch of 2 deletes refused"),
            "{whole}"
        );
    }
}
