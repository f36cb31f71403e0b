//! The request body of [C2SP tlog-witness](https://c2sp.org/tlog-witness)'s
//! `add-checkpoint`, and its `text/x.tlog.size` answer:
//!
//! ```text
//! old <size>
//! <base64 consistency proof hash>   (0 to 63 lines)
//!
//! <signed checkpoint note>
//! ```

use thiserror::Error;

use crate::hash::{Hash, hash_from_base64, hash_to_base64};

/// The most consistency proof lines a request may carry.
pub const MAX_PROOF_LINES: usize = 63;

/// The media type of a witness's 409 answer: its latest size and a newline.
pub const SIZE_CONTENT_TYPE: &str = "text/x.tlog.size";

/// An `add-checkpoint` request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AddCheckpoint {
    /// The size of the checkpoint the witness last cosigned, as the client believes.
    pub old_size: u64,
    /// The RFC 6962 consistency proof from `old_size` to the checkpoint's size.
    pub proof: Vec<Hash>,
    /// The signed checkpoint note, verbatim.
    pub checkpoint: Vec<u8>,
}

/// A request body that is not of the `add-checkpoint` form.
#[derive(Debug, Error)]
#[error("malformed add-checkpoint request: {0}")]
pub struct MalformedRequest(pub &'static str);

impl AddCheckpoint {
    /// Parses a request body strictly.
    pub fn parse(body: &[u8]) -> Result<AddCheckpoint, MalformedRequest> {
        let mut rest = body;
        let old = next_line(&mut rest)?;
        let old = old
            .strip_prefix(b"old ")
            .and_then(|s| std::str::from_utf8(s).ok())
            .and_then(parse_decimal)
            .ok_or(MalformedRequest(
                "the first line is not `old <size>` in decimal without leading zeros",
            ))?;
        let mut proof = Vec::new();
        loop {
            let line = next_line(&mut rest)?;
            if line.is_empty() {
                break;
            }
            if proof.len() == MAX_PROOF_LINES {
                return Err(MalformedRequest("more than 63 consistency proof lines"));
            }
            let hash = std::str::from_utf8(line)
                .ok()
                .and_then(hash_from_base64)
                .ok_or(MalformedRequest(
                    "a proof line is not the base64 of 32 bytes",
                ))?;
            proof.push(hash);
        }
        Ok(AddCheckpoint {
            old_size: old,
            proof,
            checkpoint: rest.to_vec(),
        })
    }

    /// The request body.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = format!("old {}\n", self.old_size).into_bytes();
        for h in &self.proof {
            out.extend_from_slice(hash_to_base64(h).as_bytes());
            out.push(b'\n');
        }
        out.push(b'\n');
        out.extend_from_slice(&self.checkpoint);
        out
    }
}

/// The next line of `rest` (without its newline), which moves past it.
fn next_line<'a>(rest: &mut &'a [u8]) -> Result<&'a [u8], MalformedRequest> {
    let end = rest
        .iter()
        .position(|&b| b == b'\n')
        .ok_or(MalformedRequest("a line does not end in a newline"))?;
    let line = &rest[..end];
    *rest = &rest[end + 1..];
    Ok(line)
}

/// Parses a `text/x.tlog.size` body: a decimal size and a newline.
pub fn parse_size_body(body: &[u8]) -> Option<u64> {
    std::str::from_utf8(body.strip_suffix(b"\n")?)
        .ok()
        .and_then(parse_decimal)
}

/// A decimal with no sign and no leading zeros ("0" itself is fine).
fn parse_decimal(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) || (s.len() > 1 && s.starts_with('0'))
    {
        return None;
    }
    s.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The specification's example request body.
    #[test]
    fn the_specification_example() {
        let body = "old 20852014\n\
            PlRNCrwHpqhGrupue0L7gxbjbMiKA9temvuZZDDpkaw=\n\
            jrJZDmY8Y7SyJE0MWLpLozkIVMSMZcD5kvuKxPC3swk=\n\
            5+pKlUdi2LeF/BcMHBn+Ku6yhPGNCswZZD1X/6QgPd8=\n\
            /6WVhPs2CwSsb5rYBH5cjHV/wSmA79abXAwhXw3Kj/0=\n\
            \n\
            example.com/behind-the-sofa\n\
            20852163\n\
            CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n\
            \n\
            \u{2014} example.com/behind-the-sofa Az3grlgtzPICa5OS8npVmf1Myq/5IZniMp+ZJurmRDeOoRDe4URYN7u5/Zhcyv2q1gGzGku9nTo+zyWE+xeMcTOAYQ8=\n";
        let req = AddCheckpoint::parse(body.as_bytes()).unwrap();
        assert_eq!(req.old_size, 20852014);
        assert_eq!(req.proof.len(), 4);
        assert!(
            req.checkpoint
                .starts_with(b"example.com/behind-the-sofa\n20852163\n")
        );
        assert_eq!(req.to_bytes(), body.as_bytes());
    }

    #[test]
    fn strict() {
        let h = "PlRNCrwHpqhGrupue0L7gxbjbMiKA9temvuZZDDpkaw=";
        for bad in [
            String::new(),
            "old 1".to_string(),
            "old 01\n\ncp\n".to_string(),
            "old -1\n\ncp\n".to_string(),
            "new 1\n\ncp\n".to_string(),
            "old 1\nnot base64\n\ncp\n".to_string(),
            format!("old 1\n{h}"),
            format!("old 1\n{}\ncp\n", format!("{h}\n").repeat(64)),
        ] {
            assert!(AddCheckpoint::parse(bad.as_bytes()).is_err(), "{bad:?}");
        }
        let most = format!("old 1\n{}\ncp\n", format!("{h}\n").repeat(63));
        assert_eq!(
            AddCheckpoint::parse(most.as_bytes()).unwrap().proof.len(),
            63
        );
        assert_eq!(parse_size_body(b"42\n"), Some(42));
        assert_eq!(parse_size_body(b"42"), None);
        assert_eq!(parse_size_body(b"042\n"), None);
    }
}
