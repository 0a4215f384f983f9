//! Translation of Rhai's errors into PiCloud's outcomes: which failures are the script's
//! fault, which are sandbox limits, which are the deadline.

use picloud_shared::{CompileError, ExecutionError, SandboxLimits};
use rhai::{EvalAltResult, ParseError, ParseErrorType, Position};

use crate::run_state::StopReason;

/// A 1-based `(line, column)`, when Rhai knows one.
fn line_column(position: Position) -> Option<(u32, u32)> {
    let line = u32::try_from(position.line()?).ok()?;
    let column = position
        .position()
        .and_then(|c| u32::try_from(c).ok())
        .unwrap_or(1);
    Some((line, column.max(1)))
}

/// The text of a parse error, with limit errors phrased to name the limit.
fn parse_message(err: &ParseError, limits: &SandboxLimits) -> String {
    match err.err_type() {
        ParseErrorType::ExprTooDeep => format!(
            "expression nesting exceeds the limit of {} levels (max_expr_depth)",
            limits.max_expr_depth
        ),
        other => other.to_string(),
    }
}

/// A compile error as the admin API reports it; the position defaults to 1:1 when Rhai
/// gives none.
pub(crate) fn compile_error(err: &ParseError, limits: &SandboxLimits) -> CompileError {
    let (line, column) = line_column(err.position()).unwrap_or((1, 1));
    CompileError {
        message: parse_message(err, limits),
        line,
        column,
    }
}

/// A compile error met at run time (a stored script that no longer compiles, or one that
/// breaks a lower per-script limit): the script's fault.
pub(crate) fn compile_failure(err: &ParseError, limits: &SandboxLimits) -> ExecutionError {
    let CompileError {
        message,
        line,
        column,
    } = compile_error(err, limits);
    ExecutionError::Script {
        message,
        line: Some(line),
        column: Some(column),
    }
}

/// Maps a failed run to its outcome. `stop` is why the sandbox ended the run, if it did.
pub(crate) fn execution_error(
    err: &EvalAltResult,
    limits: &SandboxLimits,
    stop: Option<StopReason>,
) -> ExecutionError {
    let inner = err.unwrap_inner();
    let resource = |message: String| ExecutionError::ResourceLimit { message };
    match inner {
        EvalAltResult::ErrorTerminated(..) => match stop {
            Some(StopReason::Timeout) => ExecutionError::Timeout {
                limit: limits.timeout,
            },
            Some(StopReason::Operations) => resource(operations_message(limits)),
            Some(StopReason::Memory) => resource(memory_message(limits)),
            // The executor starts such a run again on a worker; it is never reported.
            Some(StopReason::SliceEnded(_)) => ExecutionError::Internal {
                message: "an inline run ended its slice".to_owned(),
            },
            None => ExecutionError::Internal {
                message: "script terminated without a recorded reason".to_owned(),
            },
        },
        EvalAltResult::ErrorTooManyOperations(..) => resource(operations_message(limits)),
        EvalAltResult::ErrorStackOverflow(..) => resource(format!(
            "script exceeded its limit of {} nested function calls (max_call_depth)",
            limits.max_call_depth
        )),
        EvalAltResult::ErrorDataTooLarge(what, ..) => {
            resource(data_too_large_message(what, limits))
        }
        EvalAltResult::ErrorTooManyVariables(..) => {
            resource("script defined more variables than the sandbox allows".to_owned())
        }
        EvalAltResult::ErrorTooManyModules(..) => {
            resource("script loaded more modules than the sandbox allows".to_owned())
        }
        EvalAltResult::ErrorParsing(kind, position) => {
            let parse = ParseError(Box::new(kind.clone()), *position);
            compile_failure(&parse, limits)
        }
        _ => script_error(err, inner),
    }
}

pub(crate) fn memory_message(limits: &SandboxLimits) -> String {
    format!(
        "script exceeded its limit of {} bytes of memory (max_memory_bytes)",
        limits.max_memory_bytes
    )
}

fn operations_message(limits: &SandboxLimits) -> String {
    format!(
        "script exceeded its limit of {} operations (max_operations)",
        limits.max_operations
    )
}

fn data_too_large_message(what: &str, limits: &SandboxLimits) -> String {
    if what.contains("string") {
        format!(
            "string exceeds the limit of {} bytes (max_string_size)",
            limits.max_string_size
        )
    } else if what.contains("array") || what.contains("BLOB") {
        format!(
            "array or blob exceeds the limit of {} elements (max_array_size)",
            limits.max_array_size
        )
    } else if what.contains("map") {
        format!(
            "object map exceeds the limit of {} entries (max_map_size)",
            limits.max_map_size
        )
    } else {
        format!("{what} exceeds a sandbox limit")
    }
}

/// A runtime error, thrown value, missing function …: Rhai's own message (without the
/// position it appends, which travels separately), naming the function it happened in.
fn script_error(outer: &EvalAltResult, inner: &EvalAltResult) -> ExecutionError {
    let text = inner.to_string();
    let message = match inner.position() {
        position if position.is_none() => text,
        position => text
            .strip_suffix(&format!(" ({position})"))
            .map_or_else(|| text.clone(), str::to_owned),
    };
    let message = match innermost_function(outer) {
        Some(name) if !name.starts_with("anon$") => format!("{message} (in function '{name}')"),
        Some(_) => format!("{message} (in a closure)"),
        None => message,
    };
    // Where it went wrong is the innermost position; fall back to the call site.
    let position = [inner.position(), outer.position()]
        .into_iter()
        .find(|p| !p.is_none())
        .unwrap_or(Position::NONE);
    let (line, column) = line_column(position).unzip();
    ExecutionError::Script {
        message,
        line,
        column,
    }
}

fn innermost_function(err: &EvalAltResult) -> Option<&str> {
    let mut current = err;
    let mut name = None;
    while let EvalAltResult::ErrorInFunctionCall(function, _, next, _) = current {
        name = Some(function.as_str());
        current = next;
    }
    name
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use rhai::Dynamic;

    use super::*;

    fn limits() -> SandboxLimits {
        SandboxLimits {
            max_operations: 500,
            timeout: Duration::from_millis(250),
            ..SandboxLimits::default()
        }
    }

    #[test]
    fn termination_follows_the_recorded_reason() {
        let terminated = EvalAltResult::ErrorTerminated(Dynamic::UNIT, Position::new(1, 1));
        assert_eq!(
            execution_error(&terminated, &limits(), Some(StopReason::Timeout)),
            ExecutionError::Timeout {
                limit: Duration::from_millis(250)
            }
        );
        assert_eq!(
            execution_error(&terminated, &limits(), Some(StopReason::Operations)),
            ExecutionError::ResourceLimit {
                message: "script exceeded its limit of 500 operations (max_operations)".into()
            }
        );
        assert!(matches!(
            execution_error(&terminated, &limits(), None),
            ExecutionError::Internal { .. }
        ));
    }

    #[test]
    fn errors_inside_functions_keep_the_inner_position() {
        let inner = EvalAltResult::ErrorVariableNotFound("x".into(), Position::new(2, 7));
        let wrapped = EvalAltResult::ErrorInFunctionCall(
            "f".into(),
            String::new(),
            Box::new(inner),
            Position::new(4, 1),
        );
        assert_eq!(
            execution_error(&wrapped, &limits(), None),
            ExecutionError::Script {
                message: "Variable not found: x (in function 'f')".into(),
                line: Some(2),
                column: Some(7),
            }
        );
    }

    #[test]
    fn data_limits_name_the_limit() {
        let err = EvalAltResult::ErrorDataTooLarge("Size of object map".into(), Position::NONE);
        let ExecutionError::ResourceLimit { message } = execution_error(&err, &limits(), None)
        else {
            panic!("expected a resource limit");
        };
        assert_eq!(
            message,
            "object map exceeds the limit of 10000 entries (max_map_size)"
        );
    }
}
