//! Spec errors that point at the file, line, column and key that caused them, with a
//! "did you mean" suggestion for near-miss keys and values.

use std::fmt;

/// Where a value of the merged spec came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// A position in a spec file (1-based line and column).
    File { file: String, line: usize, column: usize },
    /// A `--set key=value` on the command line.
    CommandLine { assignment: String },
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::File { file, line, column } => write!(f, "{file}:{line}:{column}"),
            Origin::CommandLine { assignment } => write!(f, "command line (--set {assignment})"),
        }
    }
}

/// A bad spec. Exit code 2 at the CLI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecError {
    pub origin: Origin,
    /// The dotted key at fault, when known (`methods.limaml.inner_lr`).
    pub key: Option<String>,
    pub message: String,
    pub suggestion: Option<String>,
    /// The source line, shown under the message with a caret.
    pub source_line: Option<String>,
    /// Further independent errors found in the same load, shown after this one.
    pub also: Vec<SpecError>,
}

impl SpecError {
    pub fn new(origin: Origin, key: Option<String>, message: impl Into<String>) -> Self {
        SpecError { origin, key, message: message.into(), suggestion: None, source_line: None, also: Vec::new() }
    }

    /// One error that shows all of `errors` (at least one), the first as the headline.
    pub fn combine(errors: Vec<SpecError>) -> SpecError {
        let mut errors = errors.into_iter().flat_map(SpecError::flatten);
        let mut first = errors.next().expect("combine needs at least one error");
        first.also = errors.collect();
        first
    }

    /// This error and every one in `also`, each on its own.
    pub fn flatten(mut self) -> Vec<SpecError> {
        let also = std::mem::take(&mut self.also);
        std::iter::once(self).chain(also.into_iter().flat_map(SpecError::flatten)).collect()
    }

    pub fn line(&self) -> Option<usize> {
        match &self.origin {
            Origin::File { line, .. } => Some(*line),
            Origin::CommandLine { .. } => None,
        }
    }
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.origin)?;
        if let Some(key) = &self.key {
            write!(f, "key `{key}`: ")?;
        }
        write!(f, "{}", self.message)?;
        if let (Some(text), Origin::File { line, column, .. }) = (&self.source_line, &self.origin) {
            let gutter = line.to_string().len();
            write!(f, "\n{:gutter$} |\n{line} | {text}\n{:gutter$} | {:>col$}", "", "", "^", col = column)?;
        }
        if let Some(suggestion) = &self.suggestion {
            write!(f, "\n  help: did you mean `{suggestion}`?")?;
        }
        for other in &self.also {
            write!(f, "\nerror: {other}")?;
        }
        if !self.also.is_empty() {
            write!(f, "\n({} errors in the spec)", self.also.len() + 1)?;
        }
        Ok(())
    }
}

impl std::error::Error for SpecError {}

/// The closest candidate to `word`, if it is close enough to be a plausible typo.
pub fn did_you_mean<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<String> {
    candidates
        .into_iter()
        .map(|c| (strsim::damerau_levenshtein(word, c), c))
        .filter(|(distance, c)| *distance > 0 && *distance <= (c.len().max(3) / 3).max(2))
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, c)| c.to_string())
}
