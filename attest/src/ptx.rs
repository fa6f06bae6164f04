//! The PTX argument convention, checked on the module's text before anything is launched:
//! the controller can refuse a job at submission and the agent before it loads the module.
//!
//! A PTX workload's kernel (`.visible .entry`, C linkage) takes one pointer and one length
//! (64 bits each) per input, then per output, then a 32-bit `block_offset`:
//!
//! ```c
//! extern "C" __global__ void kernel(
//!     const uint8_t* in0, uint64_t in0_len, ...,   // per input, in job order
//!     uint8_t* out0, uint64_t out0_len, ...,       // per output, as in output_sizes
//!     uint32_t block_offset);                      // x index of this launch's first block
//! ```
//!
//! Only the parameter list is read: the `.entry` directive with the kernel's name and its
//! `.param` declarations (type `.u64`/`.s64`/`.b64` or `.u32`/`.s32`/`.b32`, with or without
//! `.ptr` and alignment attributes).

use alloc::string::{String, ToString};
use alloc::vec::Vec;

/// The width of one declared parameter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParamWidth {
    /// 64 bits (a pointer or a length).
    Bits64,
    /// 32 bits.
    Bits32,
    /// Anything else (`.u8`, `.f32`, an array...).
    Other,
}

/// Why a module does not follow the convention.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PtxConventionError {
    /// The text is not UTF-8.
    #[error("the PTX module is not text")]
    NotText,
    /// No `.entry` of that name.
    #[error("the PTX module has no .entry {0}")]
    NoEntry(String),
    /// The entry is not `.visible` (it cannot be launched by name).
    #[error(".entry {0} is not .visible")]
    NotVisible(String),
    /// The parameter list does not parse.
    #[error(".entry {kernel}: parameter list does not parse: {detail}")]
    BadParams { kernel: String, detail: String },
    /// The wrong number of parameters for the job's inputs and outputs.
    #[error(
        ".entry {kernel} takes {got} parameters; {inputs} inputs and {outputs} outputs need {expected} (pointer and length per buffer, then block_offset)"
    )]
    Count {
        kernel: String,
        got: usize,
        expected: usize,
        inputs: usize,
        outputs: usize,
    },
    /// A parameter of the wrong width.
    #[error(".entry {kernel}: parameter {index} must be {expected} bits")]
    Width {
        kernel: String,
        index: usize,
        expected: u8,
    },
}

/// The declared parameter widths of `.entry kernel` in `ptx`, and whether it is `.visible`.
pub fn entry_params(
    ptx: &[u8],
    kernel: &str,
) -> Result<(bool, Vec<ParamWidth>), PtxConventionError> {
    let text = core::str::from_utf8(ptx).map_err(|_| PtxConventionError::NotText)?;
    let text = strip_comments(text);
    let mut rest = text.as_str();
    while let Some(at) = rest.find(".entry") {
        let before = &rest[..at];
        let after = rest[at + ".entry".len()..].trim_start();
        let name_end = after
            .find(|c: char| c == '(' || c == '{' || c.is_whitespace())
            .unwrap_or(after.len());
        let name = &after[..name_end];
        if name == kernel {
            // `.visible` is among the directives just before `.entry` on its statement.
            let stmt_start = before.rfind([';', '}']).map_or(0, |i| i + 1);
            let visible = before[stmt_start..]
                .split_whitespace()
                .any(|w| w == ".visible");
            let open = after[name_end..].trim_start();
            let Some(list) = open.strip_prefix('(') else {
                return Ok((visible, Vec::new()));
            };
            let close = list
                .find(')')
                .ok_or_else(|| PtxConventionError::BadParams {
                    kernel: kernel.to_string(),
                    detail: "no closing parenthesis".to_string(),
                })?;
            let params = list[..close]
                .split(',')
                .map(str::trim)
                .filter(|p| !p.is_empty())
                .map(|p| width_of(p, kernel))
                .collect::<Result<Vec<_>, _>>()?;
            return Ok((visible, params));
        }
        rest = &after[name_end..];
    }
    Err(PtxConventionError::NoEntry(kernel.to_string()))
}

/// Checks that `.entry kernel` follows the convention for `inputs` inputs and `outputs`
/// outputs.
pub fn check_convention(
    ptx: &[u8],
    kernel: &str,
    inputs: usize,
    outputs: usize,
) -> Result<(), PtxConventionError> {
    let (visible, params) = entry_params(ptx, kernel)?;
    if !visible {
        return Err(PtxConventionError::NotVisible(kernel.to_string()));
    }
    let expected = 2 * (inputs + outputs) + 1;
    if params.len() != expected {
        return Err(PtxConventionError::Count {
            kernel: kernel.to_string(),
            got: params.len(),
            expected,
            inputs,
            outputs,
        });
    }
    for (index, w) in params.iter().enumerate() {
        let want = if index + 1 == expected {
            ParamWidth::Bits32
        } else {
            ParamWidth::Bits64
        };
        if *w != want {
            return Err(PtxConventionError::Width {
                kernel: kernel.to_string(),
                index,
                expected: if want == ParamWidth::Bits32 { 32 } else { 64 },
            });
        }
    }
    Ok(())
}

/// One `.param` declaration's width.
fn width_of(decl: &str, kernel: &str) -> Result<ParamWidth, PtxConventionError> {
    let mut words = decl.split_whitespace();
    if words.next() != Some(".param") {
        return Err(PtxConventionError::BadParams {
            kernel: kernel.to_string(),
            detail: alloc::format!("`{decl}` is not a .param"),
        });
    }
    let ty = words.next().unwrap_or("");
    // An array (`name[16]`) is never a pointer or a length.
    if decl.contains('[') {
        return Ok(ParamWidth::Other);
    }
    Ok(match ty {
        ".u64" | ".s64" | ".b64" => ParamWidth::Bits64,
        ".u32" | ".s32" | ".b32" => ParamWidth::Bits32,
        _ => ParamWidth::Other,
    })
}

/// The text without `//` and `/* */` comments.
fn strip_comments(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    loop {
        let line = rest.find("//");
        let block = rest.find("/*");
        match (line, block) {
            (Some(l), b) if b.is_none_or(|b| l < b) => {
                out.push_str(&rest[..l]);
                rest = rest[l..].find('\n').map_or("", |n| &rest[l + n..]);
            }
            (_, Some(b)) => {
                out.push_str(&rest[..b]);
                rest = rest[b + 2..]
                    .find("*/")
                    .map_or("", |e| &rest[b + 2 + e + 2..]);
                out.push(' ');
            }
            _ => {
                out.push_str(rest);
                return out;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const XOR: &str = "
.version 7.0
.target sm_52
.address_size 64

// out0[i] = in0[i] ^ 0x5a
.visible .entry xor_bytes(
    .param .u64 in0,        // pointer
    .param .u64 in0_len,
    .param .u64 .ptr .global .align 1 out0,
    .param .u64 out0_len,
    .param .u64 out1,
    .param .u64 out1_len,
    .param .u32 block_offset
)
{
    ret;
}

.entry helper(
    .param .u32 x
)
{ ret; }
";

    #[test]
    fn a_kernel_that_follows_the_convention_passes_and_each_breach_is_named() {
        assert_eq!(check_convention(XOR.as_bytes(), "xor_bytes", 1, 2), Ok(()));
        assert!(matches!(
            check_convention(XOR.as_bytes(), "xor_bytes", 2, 2),
            Err(PtxConventionError::Count {
                got: 7,
                expected: 9,
                ..
            })
        ));
        assert_eq!(
            check_convention(XOR.as_bytes(), "nope", 1, 2),
            Err(PtxConventionError::NoEntry("nope".into()))
        );
        assert_eq!(
            check_convention(XOR.as_bytes(), "helper", 0, 0),
            Err(PtxConventionError::NotVisible("helper".into()))
        );
        let narrow = XOR.replace(".param .u64 in0_len", ".param .u32 in0_len");
        assert!(matches!(
            check_convention(narrow.as_bytes(), "xor_bytes", 1, 2),
            Err(PtxConventionError::Width {
                index: 1,
                expected: 64,
                ..
            })
        ));
        let wide_last = XOR.replace(".param .u32 block_offset", ".param .u64 block_offset");
        assert!(matches!(
            check_convention(wide_last.as_bytes(), "xor_bytes", 1, 2),
            Err(PtxConventionError::Width {
                index: 6,
                expected: 32,
                ..
            })
        ));
        assert_eq!(
            check_convention(&[0xff, 0xfe], "xor_bytes", 1, 2),
            Err(PtxConventionError::NotText)
        );
    }

    #[test]
    fn a_commented_out_entry_is_not_an_entry() {
        let text = "/* .visible .entry ghost(.param .u32 b) */\n// .visible .entry ghost2(.param .u32 b)\n";
        assert!(matches!(
            check_convention(text.as_bytes(), "ghost", 0, 0),
            Err(PtxConventionError::NoEntry(_))
        ));
        assert!(matches!(
            check_convention(text.as_bytes(), "ghost2", 0, 0),
            Err(PtxConventionError::NoEntry(_))
        ));
    }
}
