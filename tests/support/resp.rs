//! A tiny synchronous RESP client for inspecting servers from tests (independent of fred, so
//! the code under test is not also the measuring instrument).

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::Duration;

#[derive(Debug, Clone, PartialEq)]
pub enum RedisReply {
    Status(String),
    Error(String),
    Int(i64),
    Bulk(Option<Vec<u8>>),
    Array(Option<Vec<RedisReply>>),
}

impl RedisReply {
    pub fn text(&self) -> Option<String> {
        match self {
            RedisReply::Status(s) => Some(s.clone()),
            RedisReply::Bulk(Some(b)) => Some(String::from_utf8_lossy(b).into_owned()),
            RedisReply::Int(i) => Some(i.to_string()),
            _ => None,
        }
    }
    pub fn int(&self) -> i64 {
        match self {
            RedisReply::Int(i) => *i,
            other => panic!("expected an integer reply, got {other:?}"),
        }
    }
    pub fn array(&self) -> Vec<RedisReply> {
        match self {
            RedisReply::Array(Some(v)) => v.clone(),
            other => panic!("expected an array reply, got {other:?}"),
        }
    }
}

pub fn command(port: u16, args: &[&str]) -> std::io::Result<RedisReply> {
    Ok(commands(port, &[args])?.pop().expect("one reply"))
}

/// Several commands on one connection, in order (`READONLY` then a read, on a Cluster
/// replica); their replies.
pub fn commands(port: u16, all: &[&[&str]]) -> std::io::Result<Vec<RedisReply>> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.set_nodelay(true)?;
    let mut out = Vec::new();
    for args in all {
        out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
        for a in *args {
            out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
            out.extend_from_slice(a.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
    }
    s.write_all(&out)?;
    let mut r = BufReader::new(s);
    all.iter().map(|_| read_reply(&mut r)).collect()
}

fn read_line(r: &mut impl BufRead) -> std::io::Result<String> {
    let mut line = String::new();
    if r.read_line(&mut line)? == 0 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "connection closed",
        ));
    }
    Ok(line.trim_end_matches("\r\n").to_string())
}

fn read_reply(r: &mut impl BufRead) -> std::io::Result<RedisReply> {
    let line = read_line(r)?;
    let bad = || std::io::Error::new(std::io::ErrorKind::InvalidData, "bad RESP");
    let (t, rest) = line.split_at(1);
    Ok(match t {
        "+" => RedisReply::Status(rest.into()),
        "-" => RedisReply::Error(rest.into()),
        ":" => RedisReply::Int(rest.parse().map_err(|_| bad())?),
        "$" => {
            let n: i64 = rest.parse().map_err(|_| bad())?;
            if n < 0 {
                RedisReply::Bulk(None)
            } else {
                let mut b = vec![0u8; n as usize + 2];
                r.read_exact(&mut b)?;
                b.truncate(n as usize);
                RedisReply::Bulk(Some(b))
            }
        }
        "*" => {
            let n: i64 = rest.parse().map_err(|_| bad())?;
            if n < 0 {
                RedisReply::Array(None)
            } else {
                let mut v = Vec::with_capacity(n as usize);
                for _ in 0..n {
                    v.push(read_reply(r)?);
                }
                RedisReply::Array(Some(v))
            }
        }
        _ => return Err(bad()),
    })
}
