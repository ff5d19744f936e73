//! `switchyard replay --from … --into …`: reading where a replay starts, and its progress.

use std::collections::BTreeMap;

use broker_adapters::ReplayFrom;

/// Reads `start`, `offset:<partition>=<n>,…` or `time:<RFC 3339>`.
pub fn parse_from(text: &str) -> Result<ReplayFrom, String> {
    if text == "start" {
        return Ok(ReplayFrom::Start);
    }
    if let Some(offsets) = text.strip_prefix("offset:") {
        let mut at = BTreeMap::new();
        for pair in offsets.split(',') {
            let (partition, offset) = pair
                .split_once('=')
                .ok_or_else(|| format!("`{pair}` is not <partition>=<offset>"))?;
            let partition: u32 = partition
                .trim()
                .parse()
                .map_err(|_| format!("`{partition}` is not a partition number"))?;
            let offset: u64 = offset
                .trim()
                .parse()
                .map_err(|_| format!("`{offset}` is not an offset"))?;
            if at.insert(partition, offset).is_some() {
                return Err(format!("partition {partition} is named twice"));
            }
        }
        return Ok(ReplayFrom::Offsets(at));
    }
    if let Some(time) = text.strip_prefix("time:") {
        let at = chrono::DateTime::parse_from_rfc3339(time)
            .map_err(|e| format!("`{time}` is not an RFC 3339 time: {e}"))?;
        let ms =
            u64::try_from(at.timestamp_millis()).map_err(|_| format!("`{time}` is before 1970"))?;
        return Ok(ReplayFrom::Time(ms));
    }
    Err(format!(
        "`{text}` is none of start, offset:<partition>=<n>,…, time:<RFC 3339>"
    ))
}

/// `from` as `--from` reads it.
pub fn show_from(from: &ReplayFrom) -> String {
    match from {
        ReplayFrom::Start => "start".into(),
        ReplayFrom::Offsets(offsets) => {
            let pairs: Vec<String> = offsets.iter().map(|(p, o)| format!("{p}={o}")).collect();
            format!("offset:{}", pairs.join(","))
        }
        ReplayFrom::Time(ms) => {
            let at = i64::try_from(*ms)
                .ok()
                .and_then(chrono::DateTime::from_timestamp_millis)
                .unwrap_or_default();
            format!(
                "time:{}",
                at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_is_shown_reads_back_alike() {
        for from in [
            ReplayFrom::Start,
            ReplayFrom::Offsets([(0, 10), (7, 3)].into()),
            ReplayFrom::Time(1_796_169_600_123),
        ] {
            assert_eq!(parse_from(&show_from(&from)), Ok(from.clone()), "{from:?}");
        }
        assert_eq!(
            show_from(&ReplayFrom::Offsets([(0, 10), (7, 3)].into())),
            "offset:0=10,7=3"
        );
    }

    #[test]
    fn every_form_reads_and_nonsense_is_named() {
        assert_eq!(parse_from("start"), Ok(ReplayFrom::Start));
        assert_eq!(
            parse_from("offset:0=10,3=5"),
            Ok(ReplayFrom::Offsets([(0, 10), (3, 5)].into()))
        );
        assert_eq!(
            parse_from("time:2026-12-02T00:00:00Z"),
            Ok(ReplayFrom::Time(1_796_169_600_000))
        );
        for bad in [
            "",
            "begin",
            "offset:",
            "offset:a=1",
            "offset:0=1,0=2",
            "time:yesterday",
            "time:1960-01-01T00:00:00Z",
        ] {
            assert!(parse_from(bad).is_err(), "{bad}");
        }
    }
}
