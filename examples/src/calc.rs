//! Arithmetic expressions with named parameters, for the `calculate` job type: a small
//! recursive-descent parser into a syntax tree, and its evaluation over `f64`.
//!
//! Grammar, loosest binding first:
//!
//! ```text
//! expr    = term   (("+" | "-") term)*
//! term    = unary  (("*" | "/" | "%") unary)*
//! unary   = ("-" | "+") unary | power
//! power   = primary ("^" unary)?            right-associative; -2^2 is -4, 2^-1 is 0.5
//! primary = number | name | name "(" expr ("," expr)* ")" | "(" expr ")"
//! ```
//!
//! Names are parameters or the constants `pi` and `e` (parameters win). Functions: `sqrt`,
//! `abs`, `floor`, `ceil`, `round`, `exp`, `ln`, `log10`, `sin`, `cos`, `tan` (one argument),
//! `pow` (two), `min` and `max` (one or more).

use std::fmt;

/// The longest expression accepted, in bytes.
pub const MAX_EXPRESSION_BYTES: usize = 64 << 10;

/// How deeply parentheses, unary signs and powers may nest: the parser recurses once per level,
/// and a hostile expression must not overflow the stack.
const MAX_DEPTH: usize = 200;

/// Why an expression could not be evaluated.
#[derive(Debug, Clone, PartialEq)]
pub enum CalcError {
    /// The text is not an expression; `at` is a 1-based column (in characters).
    Syntax {
        /// Where the parser stopped.
        at: usize,
        /// What it expected or found.
        msg: String,
    },
    /// A name that is neither a parameter nor a constant.
    UnknownName(String),
    /// A call of a function that does not exist.
    UnknownFunction(String),
    /// A function called with the wrong number of arguments.
    Arity {
        /// The function.
        name: String,
        /// How many it takes, in words.
        expected: &'static str,
        /// How many it got.
        got: usize,
    },
    /// `/` or `%` by zero.
    DivisionByZero,
    /// The result is infinite or not a number (an overflow, `sqrt(-1)`, `ln(0)`...).
    NotFinite,
    /// The expression nests deeper than the parser allows.
    TooDeep,
    /// The expression is longer than [`MAX_EXPRESSION_BYTES`].
    TooLong,
}

impl fmt::Display for CalcError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Syntax { at, msg } => write!(f, "syntax error at column {at}: {msg}"),
            Self::UnknownName(name) => write!(f, "unknown name `{name}`"),
            Self::UnknownFunction(name) => write!(f, "unknown function `{name}`"),
            Self::Arity {
                name,
                expected,
                got,
            } => write!(f, "`{name}` takes {expected} argument(s), got {got}"),
            Self::DivisionByZero => f.write_str("division by zero"),
            Self::NotFinite => f.write_str("result is not a finite number"),
            Self::TooDeep => write!(f, "expression nests deeper than {MAX_DEPTH} levels"),
            Self::TooLong => write!(f, "expression is longer than {MAX_EXPRESSION_BYTES} bytes"),
        }
    }
}

impl std::error::Error for CalcError {}

/// A parsed expression.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    /// A number literal.
    Num(f64),
    /// A parameter or constant.
    Name(String),
    /// Unary minus.
    Neg(Box<Expr>),
    /// A binary operation.
    Bin(Op, Box<Expr>, Box<Expr>),
    /// A function call, arity already checked.
    Call(Func, Vec<Expr>),
}

/// A binary operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `+`
    Add,
    /// `-`
    Sub,
    /// `*`
    Mul,
    /// `/`
    Div,
    /// `%`, the remainder with the sign of the dividend.
    Rem,
    /// `^`
    Pow,
}

/// A built-in function.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Func {
    /// Square root.
    Sqrt,
    /// Absolute value.
    Abs,
    /// Round down.
    Floor,
    /// Round up.
    Ceil,
    /// Round half away from zero.
    Round,
    /// e^x.
    Exp,
    /// Natural logarithm.
    Ln,
    /// Base-10 logarithm.
    Log10,
    /// Sine (radians).
    Sin,
    /// Cosine (radians).
    Cos,
    /// Tangent (radians).
    Tan,
    /// `pow(a, b)` = a^b.
    Pow,
    /// Smallest argument.
    Min,
    /// Largest argument.
    Max,
}

impl Func {
    fn by_name(name: &str) -> Option<Self> {
        Some(match name {
            "sqrt" => Self::Sqrt,
            "abs" => Self::Abs,
            "floor" => Self::Floor,
            "ceil" => Self::Ceil,
            "round" => Self::Round,
            "exp" => Self::Exp,
            "ln" => Self::Ln,
            "log10" => Self::Log10,
            "sin" => Self::Sin,
            "cos" => Self::Cos,
            "tan" => Self::Tan,
            "pow" => Self::Pow,
            "min" => Self::Min,
            "max" => Self::Max,
            _ => return None,
        })
    }

    /// Whether `n` arguments suit the function, and if not, how many it takes.
    fn arity(self, n: usize) -> Result<(), &'static str> {
        match self {
            Self::Min | Self::Max if n >= 1 => Ok(()),
            Self::Min | Self::Max => Err("at least 1"),
            Self::Pow if n == 2 => Ok(()),
            Self::Pow => Err("2"),
            _ if n == 1 => Ok(()),
            _ => Err("1"),
        }
    }

    fn apply(self, args: &[f64]) -> f64 {
        let x = args.first().copied().unwrap_or(f64::NAN);
        match self {
            Self::Sqrt => x.sqrt(),
            Self::Abs => x.abs(),
            Self::Floor => x.floor(),
            Self::Ceil => x.ceil(),
            Self::Round => x.round(),
            Self::Exp => x.exp(),
            Self::Ln => x.ln(),
            Self::Log10 => x.log10(),
            Self::Sin => x.sin(),
            Self::Cos => x.cos(),
            Self::Tan => x.tan(),
            Self::Pow => x.powf(args.get(1).copied().unwrap_or(f64::NAN)),
            Self::Min => args.iter().copied().fold(f64::INFINITY, f64::min),
            Self::Max => args.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        }
    }
}

/// Parses an expression.
///
/// # Errors
/// [`CalcError::Syntax`], [`CalcError::UnknownFunction`], [`CalcError::Arity`],
/// [`CalcError::TooDeep`] or [`CalcError::TooLong`].
pub fn parse(text: &str) -> Result<Expr, CalcError> {
    if text.len() > MAX_EXPRESSION_BYTES {
        return Err(CalcError::TooLong);
    }
    let mut parser = Parser {
        chars: text.chars().collect(),
        pos: 0,
        depth: 0,
    };
    let expr = parser.expr()?;
    parser.skip_space();
    if let Some(c) = parser.peek() {
        return Err(parser.error(format!("unexpected `{c}`")));
    }
    Ok(expr)
}

/// Evaluates a parsed expression, looking names up in `params` first.
///
/// # Errors
/// [`CalcError::UnknownName`], [`CalcError::DivisionByZero`] or [`CalcError::NotFinite`].
pub fn eval(expr: &Expr, params: &dyn Fn(&str) -> Option<f64>) -> Result<f64, CalcError> {
    let value = eval_inner(expr, params)?;
    if value.is_finite() {
        Ok(value)
    } else {
        Err(CalcError::NotFinite)
    }
}

/// Parses and evaluates in one step.
///
/// # Errors
/// Any [`CalcError`].
pub fn evaluate(text: &str, params: &dyn Fn(&str) -> Option<f64>) -> Result<f64, CalcError> {
    eval(&parse(text)?, params)
}

fn eval_inner(expr: &Expr, params: &dyn Fn(&str) -> Option<f64>) -> Result<f64, CalcError> {
    Ok(match expr {
        Expr::Num(n) => *n,
        Expr::Name(name) => match params(name) {
            Some(value) => value,
            None => match name.as_str() {
                "pi" => std::f64::consts::PI,
                "e" => std::f64::consts::E,
                _ => return Err(CalcError::UnknownName(name.clone())),
            },
        },
        Expr::Neg(inner) => -eval_inner(inner, params)?,
        Expr::Bin(op, left, right) => {
            let a = eval_inner(left, params)?;
            let b = eval_inner(right, params)?;
            match op {
                Op::Add => a + b,
                Op::Sub => a - b,
                Op::Mul => a * b,
                Op::Div | Op::Rem if b == 0.0 => return Err(CalcError::DivisionByZero),
                Op::Div => a / b,
                Op::Rem => a % b,
                Op::Pow => a.powf(b),
            }
        }
        Expr::Call(func, args) => {
            let values = args
                .iter()
                .map(|arg| eval_inner(arg, params))
                .collect::<Result<Vec<_>, _>>()?;
            func.apply(&values)
        }
    })
}

struct Parser {
    chars: Vec<char>,
    pos: usize,
    depth: usize,
}

impl Parser {
    fn error(&self, msg: String) -> CalcError {
        CalcError::Syntax {
            at: self.pos + 1,
            msg,
        }
    }

    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn skip_space(&mut self) {
        while self.peek().is_some_and(char::is_whitespace) {
            self.pos += 1;
        }
    }

    /// Consumes `c` (after spaces) if it is next.
    fn eat(&mut self, c: char) -> bool {
        self.skip_space();
        if self.peek() == Some(c) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn descend(&mut self) -> Result<(), CalcError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            Err(CalcError::TooDeep)
        } else {
            Ok(())
        }
    }

    fn expr(&mut self) -> Result<Expr, CalcError> {
        let mut left = self.term()?;
        loop {
            let op = if self.eat('+') {
                Op::Add
            } else if self.eat('-') {
                Op::Sub
            } else {
                return Ok(left);
            };
            let right = self.term()?;
            left = Expr::Bin(op, Box::new(left), Box::new(right));
        }
    }

    fn term(&mut self) -> Result<Expr, CalcError> {
        let mut left = self.unary()?;
        loop {
            let op = if self.eat('*') {
                Op::Mul
            } else if self.eat('/') {
                Op::Div
            } else if self.eat('%') {
                Op::Rem
            } else {
                return Ok(left);
            };
            let right = self.unary()?;
            left = Expr::Bin(op, Box::new(left), Box::new(right));
        }
    }

    fn unary(&mut self) -> Result<Expr, CalcError> {
        self.descend()?;
        let expr = if self.eat('-') {
            Expr::Neg(Box::new(self.unary()?))
        } else if self.eat('+') {
            self.unary()?
        } else {
            self.power()?
        };
        self.depth -= 1;
        Ok(expr)
    }

    fn power(&mut self) -> Result<Expr, CalcError> {
        let base = self.primary()?;
        if self.eat('^') {
            let exponent = self.unary()?;
            return Ok(Expr::Bin(Op::Pow, Box::new(base), Box::new(exponent)));
        }
        Ok(base)
    }

    fn primary(&mut self) -> Result<Expr, CalcError> {
        self.skip_space();
        match self.peek() {
            None => Err(self.error("unexpected end of expression".to_owned())),
            Some('(') => {
                self.pos += 1;
                let inner = self.expr()?;
                if !self.eat(')') {
                    return Err(self.error("expected `)`".to_owned()));
                }
                Ok(inner)
            }
            Some(c) if c.is_ascii_digit() || c == '.' => self.number(),
            Some(c) if c.is_alphabetic() || c == '_' => self.name(),
            Some(c) => Err(self.error(format!("unexpected `{c}`"))),
        }
    }

    fn number(&mut self) -> Result<Expr, CalcError> {
        let start = self.pos;
        let digits = |p: &mut Self| {
            let from = p.pos;
            while p.peek().is_some_and(|c| c.is_ascii_digit()) {
                p.pos += 1;
            }
            p.pos > from
        };
        let mut any = digits(self);
        if self.peek() == Some('.') {
            self.pos += 1;
            any |= digits(self);
        }
        if !any {
            self.pos = start;
            return Err(self.error("expected a number".to_owned()));
        }
        if matches!(self.peek(), Some('e' | 'E')) {
            let mark = self.pos;
            self.pos += 1;
            if matches!(self.peek(), Some('+' | '-')) {
                self.pos += 1;
            }
            if !digits(self) {
                // Not an exponent after all (`2e` is 2 times the constant e, written oddly).
                self.pos = mark;
            }
        }
        let text: String = self.chars[start..self.pos].iter().collect();
        text.parse::<f64>()
            .map(Expr::Num)
            .map_err(|_| CalcError::Syntax {
                at: start + 1,
                msg: format!("bad number `{text}`"),
            })
    }

    fn name(&mut self) -> Result<Expr, CalcError> {
        let start = self.pos;
        while self.peek().is_some_and(|c| c.is_alphanumeric() || c == '_') {
            self.pos += 1;
        }
        let name: String = self.chars[start..self.pos].iter().collect();
        if !self.eat('(') {
            return Ok(Expr::Name(name));
        }
        let func = Func::by_name(&name).ok_or_else(|| CalcError::UnknownFunction(name.clone()))?;
        let mut args = Vec::new();
        if !self.eat(')') {
            loop {
                args.push(self.expr()?);
                if self.eat(')') {
                    break;
                }
                if !self.eat(',') {
                    return Err(self.error("expected `,` or `)`".to_owned()));
                }
            }
        }
        func.arity(args.len())
            .map_err(|expected| CalcError::Arity {
                name,
                expected,
                got: args.len(),
            })?;
        Ok(Expr::Call(func, args))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(name: &str) -> Option<f64> {
        match name {
            "a" => Some(1.0),
            "b" => Some(2.0),
            "c" => Some(3.0),
            "x_1" => Some(0.5),
            "e" => None,
            _ => None,
        }
    }

    /// (expression, expected value or error text).
    const CASES: &[(&str, Result<f64, &str>)] = &[
        ("1 + 2", Ok(3.0)),
        ("(a + b) * 2 ^ c", Ok(24.0)),
        ("2 + 3 * 4", Ok(14.0)),
        ("(2 + 3) * 4", Ok(20.0)),
        ("10 - 4 - 3", Ok(3.0)),
        ("100 / 10 / 5", Ok(2.0)),
        ("7 % 3", Ok(1.0)),
        ("-7 % 3", Ok(-1.0)),
        ("2 ^ 3 ^ 2", Ok(512.0)),
        ("-2 ^ 2", Ok(-4.0)),
        ("(-2) ^ 2", Ok(4.0)),
        ("2 ^ -1", Ok(0.5)),
        ("--3", Ok(3.0)),
        ("+4", Ok(4.0)),
        ("-(a + b)", Ok(-3.0)),
        ("1.5e3 + .5", Ok(1500.5)),
        ("2E-2", Ok(0.02)),
        ("x_1 * 4", Ok(2.0)),
        ("sqrt(16) + abs(-3)", Ok(7.0)),
        ("min(3, a, 2) + max(1, 5, c)", Ok(6.0)),
        ("max(4)", Ok(4.0)),
        ("pow(2, 10)", Ok(1024.0)),
        ("floor(2.7) + ceil(2.1) + round(2.5)", Ok(8.0)),
        ("ln(exp(2))", Ok(2.0)),
        ("log10(1000)", Ok(3.0)),
        ("cos(0) + sin(0) + tan(0)", Ok(1.0)),
        ("  1\t+\n1  ", Ok(2.0)),
        ("1 / 0", Err("division by zero")),
        ("5 % (a - 1)", Err("division by zero")),
        ("a + d", Err("unknown name `d`")),
        ("foo(1)", Err("unknown function `foo`")),
        ("sqrt(1, 2)", Err("`sqrt` takes 1 argument(s), got 2")),
        ("pow(2)", Err("`pow` takes 2 argument(s), got 1")),
        ("min()", Err("`min` takes at least 1 argument(s), got 0")),
        ("sqrt(-1)", Err("result is not a finite number")),
        ("10 ^ 400", Err("result is not a finite number")),
        (
            "",
            Err("syntax error at column 1: unexpected end of expression"),
        ),
        (
            "1 +",
            Err("syntax error at column 4: unexpected end of expression"),
        ),
        ("(1 + 2", Err("syntax error at column 7: expected `)`")),
        ("1 2", Err("syntax error at column 3: unexpected `2`")),
        ("1 + * 2", Err("syntax error at column 5: unexpected `*`")),
        (
            "max(1 2)",
            Err("syntax error at column 7: expected `,` or `)`"),
        ),
        ("1 $ 2", Err("syntax error at column 3: unexpected `$`")),
        (".", Err("syntax error at column 1: expected a number")),
    ];

    #[test]
    fn evaluates_the_table_of_cases() {
        for (text, expected) in CASES {
            let got = evaluate(text, &params).map_err(|e| e.to_string());
            match (expected, &got) {
                (Ok(want), Ok(value)) => assert!(
                    (want - value).abs() < 1e-9,
                    "{text:?}: expected {want}, got {value}"
                ),
                (Err(want), Err(error)) => assert_eq!(error, want, "{text:?}"),
                _ => panic!("{text:?}: expected {expected:?}, got {got:?}"),
            }
        }
    }

    #[test]
    fn constants_yield_to_parameters() {
        assert_eq!(evaluate("e", &params), Ok(std::f64::consts::E));
        assert_eq!(evaluate("pi", &|_| Some(3.0)), Ok(3.0));
    }

    #[test]
    fn hostile_nesting_is_an_error_not_a_stack_overflow() {
        let deep = format!("{}1{}", "(".repeat(100_000), ")".repeat(100_000));
        assert_eq!(
            parse(&deep[..MAX_EXPRESSION_BYTES]),
            Err(CalcError::TooDeep)
        );
        assert_eq!(parse(&"-".repeat(10_000)), Err(CalcError::TooDeep));
        assert_eq!(parse(&deep), Err(CalcError::TooLong));
    }
}
