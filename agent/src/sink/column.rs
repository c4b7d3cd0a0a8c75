//! How each Rust field type is laid out in RowBinary, one trait for both directions.
//!
//! The row struct is declared once (`sink::row`); its macro calls [`Column::put`] and
//! [`Column::get`] for every field in order, so encode and decode cannot drift from each other
//! or from the column list.

use std::net::{IpAddr, Ipv6Addr};

use uuid::Uuid;

/// A RowBinary payload could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The payload ended inside a value.
    #[error("row ends early while reading {0}")]
    Truncated(&'static str),
    /// A string column held invalid UTF-8.
    #[error("column {0} is not valid UTF-8")]
    Utf8(&'static str),
    /// A `Nested` column's arrays have different lengths.
    #[error("nested column {0} has arrays of different lengths")]
    NestedLength(&'static str),
    /// A column held a value its Rust type does not know.
    #[error("column {0} holds an unknown value {1:?}")]
    Unknown(&'static str, String),
    /// Bytes were left after the last column.
    #[error("{0} bytes left after the last column")]
    Trailing(usize),
}

/// A value that is one column (or, for `Nested`, several parallel array columns) in RowBinary.
pub trait Column: Sized {
    /// Sub-column names of a `Nested` column, in RowBinary order; empty for a plain column.
    const NESTED: &'static [&'static str] = &[];

    /// Appends the RowBinary encoding.
    fn put(&self, out: &mut Vec<u8>);

    /// Reads one value; `col` names the column in errors.
    fn get(r: &mut Reader<'_>, col: &'static str) -> Result<Self, DecodeError>;

    /// The bytes the value owns outside itself (text, array elements): what it adds to a row
    /// held in memory.
    fn heap_bytes(&self) -> usize {
        0
    }
}

/// A cursor over RowBinary bytes.
#[derive(Debug)]
pub struct Reader<'a> {
    pub(super) buf: &'a [u8],
}

impl<'a> Reader<'a> {
    /// A reader at the start of `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        Self { buf }
    }

    /// Bytes not read yet.
    pub fn rest(&self) -> &'a [u8] {
        self.buf
    }

    /// The next `N` bytes.
    pub fn take<const N: usize>(&mut self, col: &'static str) -> Result<[u8; N], DecodeError> {
        let (head, rest) = self
            .buf
            .split_first_chunk::<N>()
            .ok_or(DecodeError::Truncated(col))?;
        self.buf = rest;
        Ok(*head)
    }

    /// A LEB128 length.
    pub fn varint(&mut self, col: &'static str) -> Result<usize, DecodeError> {
        let mut v: u64 = 0;
        for shift in (0..64).step_by(7) {
            let b = self.take::<1>(col)?[0];
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return usize::try_from(v).map_err(|_| DecodeError::Truncated(col));
            }
        }
        Err(DecodeError::Truncated(col))
    }

    /// An array length, bounded by the bytes left (each element takes at least one byte), so a
    /// corrupt length cannot make a huge allocation.
    pub fn array_len(&mut self, col: &'static str) -> Result<usize, DecodeError> {
        let n = self.varint(col)?;
        if n > self.buf.len() {
            return Err(DecodeError::Truncated(col));
        }
        Ok(n)
    }
}

/// Appends a LEB128 length.
pub fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Appends a RowBinary `String`.
pub fn put_str(out: &mut Vec<u8>, s: &str) {
    put_varint(out, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

macro_rules! little_endian {
    ($($t:ty),*) => {$(
        impl Column for $t {
            fn put(&self, out: &mut Vec<u8>) {
                out.extend_from_slice(&self.to_le_bytes());
            }
            fn get(r: &mut Reader<'_>, col: &'static str) -> Result<Self, DecodeError> {
                Ok(<$t>::from_le_bytes(r.take(col)?))
            }
        }
    )*};
}

little_endian!(u16, u32, u64, i64, f32, f64);

/// `Bool` (and its 18.16 stand-in `UInt8`).
impl Column for bool {
    fn put(&self, out: &mut Vec<u8>) {
        out.push(u8::from(*self));
    }
    fn get(r: &mut Reader<'_>, col: &'static str) -> Result<Self, DecodeError> {
        Ok(r.take::<1>(col)?[0] != 0)
    }
}

impl Column for String {
    fn put(&self, out: &mut Vec<u8>) {
        put_str(out, self);
    }
    fn heap_bytes(&self) -> usize {
        self.len()
    }
    fn get(r: &mut Reader<'_>, col: &'static str) -> Result<Self, DecodeError> {
        let len = r.varint(col)?;
        if len > r.buf.len() {
            return Err(DecodeError::Truncated(col));
        }
        let (s, rest) = r.buf.split_at(len);
        r.buf = rest;
        String::from_utf8(s.to_vec()).map_err(|_| DecodeError::Utf8(col))
    }
}

/// `UUID`: two little-endian 64-bit halves, high half first.
impl Column for Uuid {
    fn put(&self, out: &mut Vec<u8>) {
        let (hi, lo) = self.as_u64_pair();
        hi.put(out);
        lo.put(out);
    }
    fn get(r: &mut Reader<'_>, col: &'static str) -> Result<Self, DecodeError> {
        Ok(Uuid::from_u64_pair(u64::get(r, col)?, u64::get(r, col)?))
    }
}

/// `IPv6` (18.16: `FixedString(16)`); IPv4 addresses are stored v4-mapped so one column holds
/// both.
impl Column for IpAddr {
    fn put(&self, out: &mut Vec<u8>) {
        let v6 = match self {
            IpAddr::V4(v4) => v4.to_ipv6_mapped(),
            IpAddr::V6(v6) => *v6,
        };
        out.extend_from_slice(&v6.octets());
    }
    fn get(r: &mut Reader<'_>, col: &'static str) -> Result<Self, DecodeError> {
        let v6 = Ipv6Addr::from(r.take::<16>(col)?);
        Ok(v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4))
    }
}

/// `Nullable(T)`: a null flag byte, then the value when not null.
impl<T: Column> Column for Option<T> {
    fn put(&self, out: &mut Vec<u8>) {
        match self {
            None => out.push(1),
            Some(v) => {
                out.push(0);
                v.put(out);
            }
        }
    }
    fn get(r: &mut Reader<'_>, col: &'static str) -> Result<Self, DecodeError> {
        if bool::get(r, col)? {
            Ok(None)
        } else {
            T::get(r, col).map(Some)
        }
    }
    fn heap_bytes(&self) -> usize {
        self.as_ref().map_or(0, Column::heap_bytes)
    }
}

/// `Array(T)`.
impl<T: Column> Column for Vec<T> {
    fn put(&self, out: &mut Vec<u8>) {
        put_varint(out, self.len() as u64);
        for v in self {
            v.put(out);
        }
    }
    fn get(r: &mut Reader<'_>, col: &'static str) -> Result<Self, DecodeError> {
        let n = r.array_len(col)?;
        (0..n).map(|_| T::get(r, col)).collect()
    }
    fn heap_bytes(&self) -> usize {
        size_of_val(self.as_slice()) + self.iter().map(Column::heap_bytes).sum::<usize>()
    }
}

/// Declares a struct stored as a ClickHouse `Nested` column: the struct, its `Nested(...)` type
/// and the RowBinary layout of a `Vec` of it (one array per field, equal lengths).
macro_rules! nested_column {
    (
        $(#[$meta:meta])*
        pub struct $name:ident {
            $(#[$fmeta0:meta])* $f0:ident : $t0:ty => $ch0:literal,
            $( $(#[$fmeta:meta])* $f:ident : $t:ty => $ch:literal, )*
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
        pub struct $name {
            $(#[$fmeta0])* pub $f0: $t0,
            $( $(#[$fmeta])* pub $f: $t, )*
        }

        impl $name {
            /// The ClickHouse type of the column (modern spelling).
            pub const CH_TYPE: &'static str =
                concat!("Nested(", stringify!($f0), " ", $ch0, $(", ", stringify!($f), " ", $ch,)* ")");
        }

        impl $crate::sink::column::Column for Vec<$name> {
            const NESTED: &'static [&'static str] = &[stringify!($f0) $(, stringify!($f))*];

            fn put(&self, out: &mut Vec<u8>) {
                $crate::sink::column::put_varint(out, self.len() as u64);
                for item in self {
                    $crate::sink::column::Column::put(&item.$f0, out);
                }
                $(
                    $crate::sink::column::put_varint(out, self.len() as u64);
                    for item in self {
                        $crate::sink::column::Column::put(&item.$f, out);
                    }
                )*
            }

            fn get(
                r: &mut $crate::sink::column::Reader<'_>,
                col: &'static str,
            ) -> Result<Self, $crate::sink::column::DecodeError> {
                use $crate::sink::column::{Column, DecodeError};
                let $f0 = <Vec<$t0> as Column>::get(r, col)?;
                $( let $f = <Vec<$t> as Column>::get(r, col)?; )*
                let n = $f0.len();
                if [$( $f.len() ),*].iter().any(|&len| len != n) {
                    return Err(DecodeError::NestedLength(col));
                }
                let mut $f0 = $f0.into_iter();
                $( let mut $f = $f.into_iter(); )*
                let mut out = Vec::with_capacity(n);
                for _ in 0..n {
                    out.push($name {
                        $f0: $f0.next().ok_or(DecodeError::NestedLength(col))?,
                        $( $f: $f.next().ok_or(DecodeError::NestedLength(col))?, )*
                    });
                }
                Ok(out)
            }

            fn heap_bytes(&self) -> usize {
                size_of_val(self.as_slice())
                    + self
                        .iter()
                        .map(|item| {
                            $crate::sink::column::Column::heap_bytes(&item.$f0)
                                $( + $crate::sink::column::Column::heap_bytes(&item.$f) )*
                        })
                        .sum::<usize>()
            }
        }
    };
}

pub(crate) use nested_column;
