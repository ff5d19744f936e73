//! A CalDAV calendar server as the calendar writer's backend (RFC 4791): each switchyard
//! calendar is a collection `<url>/<calendar_id>/` (made with MKCALENDAR when missing); a
//! booking is an event `<request_id>.ics` whose UID is the request id, written with
//! `If-None-Match: *` so a resent write is recognised; the time already taken is read with a
//! `calendar-query` REPORT over the requested range.

use chrono::{NaiveDate, NaiveDateTime, TimeZone, Utc};
use reqwest::{Method, StatusCode};
use serde::{Deserialize, Serialize};

use super::SendError;
use super::config::Limit;
use crate::domain::calendar::{Busy, Request};
use crate::secret::Secret;

/// `[calendar.caldav]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CalDavConfig {
    /// The collection holding the calendars, e.g. `https://dav.example.com/calendars/alice/`.
    pub url: String,
    /// The login.
    pub username: String,
    /// Its password.
    pub password: Secret,
    /// The server's limit.
    pub limit: Limit,
}

/// `[calendar]`: where calendars are kept; the database unless a CalDAV server is set.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CalendarConfig {
    /// A CalDAV server holding the calendars.
    pub caldav: Option<CalDavConfig>,
}

/// A CalDAV server's client.
#[derive(Clone)]
pub struct CalDav {
    base: String,
    username: String,
    password: Secret,
    http: reqwest::Client,
}

impl CalDav {
    /// A client as `config` says.
    pub fn new(config: &CalDavConfig, http: reqwest::Client) -> CalDav {
        CalDav {
            base: config.url.trim_end_matches('/').to_owned(),
            username: config.username.clone(),
            password: config.password.clone(),
            http,
        }
    }

    fn collection(&self, calendar_id: &str) -> String {
        format!("{}/{}/", self.base, urlencode(calendar_id))
    }

    fn request(&self, method: Method, url: &str) -> reqwest::RequestBuilder {
        let request = self.http.request(method, url);
        if self.username.is_empty() {
            request
        } else {
            request.basic_auth(&self.username, Some(self.password.expose()))
        }
    }

    /// The events of `calendar_id` overlapping `[start, end)`; none if the calendar does not
    /// exist yet.
    pub async fn busy(
        &self,
        calendar_id: &str,
        start: u64,
        end: u64,
    ) -> Result<Vec<Busy>, SendError> {
        let query = format!(
            r#"<?xml version="1.0" encoding="utf-8"?>
<c:calendar-query xmlns:d="DAV:" xmlns:c="urn:ietf:params:xml:ns:caldav">
  <d:prop><c:calendar-data><c:expand start="{start}" end="{end}"/></c:calendar-data></d:prop>
  <c:filter><c:comp-filter name="VCALENDAR"><c:comp-filter name="VEVENT">
    <c:time-range start="{start}" end="{end}"/>
  </c:comp-filter></c:comp-filter></c:filter>
</c:calendar-query>"#,
            start = ical_time(start),
            end = ical_time(end)
        );
        let report = Method::from_bytes(b"REPORT").map_err(|e| permanent(e.to_string()))?;
        let answer = self
            .request(report, &self.collection(calendar_id))
            .header("depth", "1")
            .header("content-type", "application/xml; charset=utf-8")
            .body(query)
            .send()
            .await
            .map_err(|e| SendError::Transient(format!("caldav: {e}")))?;
        let status = answer.status();
        if status == StatusCode::NOT_FOUND {
            return Ok(Vec::new());
        }
        let body = answer.text().await.unwrap_or_default();
        if status != StatusCode::MULTI_STATUS && !status.is_success() {
            return Err(super::refusal("caldav REPORT", status, &body));
        }
        Ok(events(&unescape(&body))
            .into_iter()
            .filter(|b| b.start < end && start < b.end)
            .collect())
    }

    /// Writes `request` as an event of `calendar_id`, making the calendar if it is missing.
    /// An event already there under its id (a write resent) is fine.
    pub async fn book(&self, calendar_id: &str, request: &Request) -> Result<(), SendError> {
        for _ in 0..2 {
            let url = format!(
                "{}{}.ics",
                self.collection(calendar_id),
                urlencode(&request.request_id)
            );
            let answer = self
                .request(Method::PUT, &url)
                .header("if-none-match", "*")
                .header("content-type", "text/calendar; charset=utf-8")
                .body(vevent(request))
                .send()
                .await
                .map_err(|e| SendError::Transient(format!("caldav: {e}")))?;
            let status = answer.status();
            match status {
                s if s.is_success() || s == StatusCode::PRECONDITION_FAILED => return Ok(()),
                // Radicale answers 409, others 404, for a PUT into a missing collection.
                StatusCode::NOT_FOUND | StatusCode::CONFLICT => self.make(calendar_id).await?,
                _ => {
                    let body = answer.text().await.unwrap_or_default();
                    return Err(super::refusal("caldav PUT", status, &body));
                }
            }
        }
        Err(SendError::Transient(format!(
            "caldav: the calendar `{calendar_id}` could not be made"
        )))
    }

    /// Makes calendar `calendar_id`; one made meanwhile is fine.
    async fn make(&self, calendar_id: &str) -> Result<(), SendError> {
        let method = Method::from_bytes(b"MKCALENDAR").map_err(|e| permanent(e.to_string()))?;
        let answer = self
            .request(method, &self.collection(calendar_id))
            .send()
            .await
            .map_err(|e| SendError::Transient(format!("caldav: {e}")))?;
        let status = answer.status();
        if status.is_success() || status == StatusCode::METHOD_NOT_ALLOWED {
            return Ok(());
        }
        let body = answer.text().await.unwrap_or_default();
        Err(super::refusal("caldav MKCALENDAR", status, &body))
    }
}

fn permanent(reason: String) -> SendError {
    SendError::Permanent(format!("caldav: {reason}"))
}

/// `at` (ms) as an iCalendar UTC date-time.
fn ical_time(at: u64) -> String {
    Utc.timestamp_millis_opt(at as i64)
        .single()
        .map(|t| t.format("%Y%m%dT%H%M%SZ").to_string())
        .unwrap_or_default()
}

/// `request` as an iCalendar object with one event.
fn vevent(request: &Request) -> String {
    let text = |s: &str| {
        s.replace('\\', "\\\\")
            .replace(';', "\\;")
            .replace(',', "\\,")
            .replace('\n', "\\n")
    };
    [
        "BEGIN:VCALENDAR",
        "VERSION:2.0",
        "PRODID:-//switchyard//calendar writer//EN",
        "BEGIN:VEVENT",
        &format!("UID:{}", text(&request.request_id)),
        &format!("DTSTAMP:{}", ical_time(request.start)),
        &format!("DTSTART:{}", ical_time(request.start)),
        &format!("DTEND:{}", ical_time(request.end)),
        &format!("SUMMARY:{}", text(&request.title)),
        "END:VEVENT",
        "END:VCALENDAR",
        "",
    ]
    .join("\r\n")
}

/// The XML entities a multistatus body escapes calendar data with.
fn unescape(xml: &str) -> String {
    xml.replace("&#13;", "\r")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&amp;", "&")
}

/// Every event in the iCalendar text of `body` with its UID and time span; one whose times
/// do not read is left out.
fn events(body: &str) -> Vec<Busy> {
    // Unfold continuation lines (RFC 5545 §3.1) first.
    let unfolded = body.replace("\r\n ", "").replace("\n ", "");
    let mut found = Vec::new();
    // (uid, start, end, whether the start is a date, duration in ms)
    type Event = (Option<String>, Option<u64>, Option<u64>, bool, Option<u64>);
    let mut current: Option<Event> = None;
    for line in unfolded.lines().map(str::trim_end) {
        match line {
            "BEGIN:VEVENT" => current = Some((None, None, None, false, None)),
            "END:VEVENT" => {
                if let Some((Some(uid), Some(start), end, all_day, duration)) = current.take() {
                    // Without an end: its duration, else a day if all-day, else an instant
                    // (RFC 5545 §3.6.1).
                    let end = end
                        .or(duration.map(|d| start.saturating_add(d)))
                        .unwrap_or(start + if all_day { 86_400_000 } else { 1 });
                    found.push(Busy { uid, start, end });
                }
            }
            _ => {
                let Some((uid, start, end, all_day, duration)) = current.as_mut() else {
                    continue;
                };
                let Some((name, value)) = line.split_once(':') else {
                    continue;
                };
                let (property, params) = name.split_once(';').unwrap_or((name, ""));
                match property {
                    "UID" => *uid = Some(value.to_owned()),
                    "DTSTART" => {
                        *start = time(value, params);
                        *all_day = params.contains("VALUE=DATE") && !params.contains("DATE-TIME");
                    }
                    "DTEND" => *end = time(value, params),
                    "DURATION" => *duration = duration_ms(value),
                    _ => {}
                }
            }
        }
    }
    found
}

/// An iCalendar DATE-TIME or DATE value (with its parameters) in ms: UTC (`Z`), in a named
/// zone (`TZID=`), floating (read as UTC), or a date (its UTC midnight).
fn time(value: &str, params: &str) -> Option<u64> {
    let ms = |t: chrono::DateTime<Utc>| u64::try_from(t.timestamp_millis()).ok();
    if params.contains("VALUE=DATE") && !params.contains("VALUE=DATE-TIME") {
        let date = NaiveDate::parse_from_str(value, "%Y%m%d").ok()?;
        return ms(Utc.from_utc_datetime(&date.and_hms_opt(0, 0, 0)?));
    }
    let local = NaiveDateTime::parse_from_str(value.trim_end_matches('Z'), "%Y%m%dT%H%M%S").ok()?;
    let zone = params
        .split(';')
        .find_map(|p| p.strip_prefix("TZID="))
        .and_then(|z| z.trim_matches('"').parse::<chrono_tz::Tz>().ok());
    match zone {
        Some(zone) if !value.ends_with('Z') => ms(zone
            .from_local_datetime(&local)
            .earliest()?
            .with_timezone(&Utc)),
        _ => ms(Utc.from_utc_datetime(&local)),
    }
}

/// An iCalendar DURATION (`P1D`, `PT1H30M`, `P2W`, …) in ms.
fn duration_ms(value: &str) -> Option<u64> {
    let rest = value.strip_prefix('+').unwrap_or(value).strip_prefix('P')?;
    let (mut total, mut number, mut in_time) = (0u64, String::new(), false);
    for c in rest.chars() {
        match c {
            'T' => in_time = true,
            '0'..='9' => number.push(c),
            unit => {
                let n: u64 = std::mem::take(&mut number).parse().ok()?;
                let ms = match (unit, in_time) {
                    ('W', false) => 7 * 86_400_000,
                    ('D', false) => 86_400_000,
                    ('H', true) => 3_600_000,
                    ('M', true) => 60_000,
                    ('S', true) => 1_000,
                    _ => return None,
                };
                total = total.saturating_add(n.saturating_mul(ms));
            }
        }
    }
    number.is_empty().then_some(total)
}

/// `segment` as one URL path segment: dots too are escaped, so `.` and `..` stay names.
fn urlencode(segment: &str) -> String {
    segment
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_read_in_utc_in_zones_and_as_dates() {
        let body = "<C:calendar-data>BEGIN:VCALENDAR\r\nBEGIN:VEVENT\r\nUID:a\r\nDTSTART:20261202T100000Z\r\nDTEND:20261202T110000Z\r\nEND:VEVENT\r\nBEGIN:VEVENT\r\nUID:b\r\nDTSTART;TZID=Europe/Paris:20261202T120000\r\nDTEND;TZID=Europe/Paris:20261202T130000\r\nEND:VEVENT\r\nBEGIN:VEVENT\r\nUID:c-folded\r\n -part\r\nDTSTART;VALUE=DATE:20261203\r\nDTEND;VALUE=DATE:20261204\r\nEND:VEVENT\r\nEND:VCALENDAR</C:calendar-data>";
        let found = events(body);
        let at = |s: &str| time(s, "").unwrap();
        assert_eq!(
            found,
            vec![
                Busy {
                    uid: "a".into(),
                    start: at("20261202T100000Z"),
                    end: at("20261202T110000Z")
                },
                Busy {
                    uid: "b".into(),
                    start: at("20261202T110000Z"),
                    end: at("20261202T120000Z")
                },
                Busy {
                    uid: "c-folded-part".into(),
                    start: at("20261203T000000Z"),
                    end: at("20261204T000000Z")
                },
            ]
        );
    }

    #[test]
    fn a_booking_is_an_event_named_by_its_request() {
        let request = Request {
            request_id: "req-1".into(),
            title: "dentist, then lunch".into(),
            start: 1_796_205_600_000,
            end: 1_796_209_200_000,
        };
        let text = vevent(&request);
        assert!(text.contains("UID:req-1\r\n"));
        assert!(text.contains("SUMMARY:dentist\\, then lunch\r\n"));
        let read = events(&text);
        assert_eq!(
            read,
            vec![Busy {
                uid: "req-1".into(),
                start: request.start,
                end: request.end
            }]
        );
        assert_eq!(urlencode("a b/c"), "a%20b%2Fc");
        assert_eq!(urlencode(".."), "%2E%2E");
    }

    #[test]
    fn an_event_without_an_end_lasts_its_duration_or_its_day() {
        let body = "BEGIN:VEVENT\r\nUID:d\r\nDTSTART:20261202T100000Z\r\nDURATION:PT1H30M\r\nEND:VEVENT\r\nBEGIN:VEVENT\r\nUID:e\r\nDTSTART;VALUE=DATE:20261203\r\nEND:VEVENT\r\n";
        let found = events(body);
        assert_eq!(found[0].end - found[0].start, 90 * 60_000);
        assert_eq!(found[1].end - found[1].start, 86_400_000);
        assert_eq!(duration_ms("P1W"), Some(7 * 86_400_000));
        assert_eq!(duration_ms("P1DT2H"), Some(26 * 3_600_000));
        assert_eq!(duration_ms("PT5X"), None);
    }
}
