//! Progress display: an overall bar and a line per running stage when stderr is a terminal,
//! plain per-stage lines otherwise. Owns the terminal's stderr during a run; stages only send
//! short status strings.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

pub struct Progress {
    bars: Option<(MultiProgress, ProgressBar)>,
    running: Mutex<HashMap<String, ProgressBar>>,
    quiet: bool,
}

impl Progress {
    /// `show_bars`: the user's wish; bars appear only on a terminal. `quiet` drops plain lines.
    pub fn new(total: usize, show_bars: bool, quiet: bool) -> Self {
        let bars = (show_bars && std::io::stderr().is_terminal()).then(|| {
            let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
            let overall = multi.add(ProgressBar::new(total as u64));
            overall.set_style(
                ProgressStyle::with_template("{elapsed_precise} [{bar:30.cyan/blue}] {pos}/{len} stages {msg}")
                    .expect("valid template")
                    .progress_chars("=> "),
            );
            overall.enable_steady_tick(Duration::from_millis(500));
            (multi, overall)
        });
        Progress { bars, running: Mutex::new(HashMap::new()), quiet }
    }

    pub fn started(&self, name: &str) {
        tracing::info!(stage = name, "started");
        if let Some((multi, _)) = &self.bars {
            let bar = multi.add(ProgressBar::new_spinner());
            bar.set_style(ProgressStyle::with_template("  {spinner} {prefix} {msg}").expect("valid template"));
            bar.set_prefix(name.to_string());
            bar.enable_steady_tick(Duration::from_millis(120));
            self.running.lock().expect("progress lock").insert(name.to_string(), bar);
        } else if !self.quiet {
            eprintln!("  start  {name}");
        }
    }

    pub fn message(&self, name: &str, message: String) {
        tracing::debug!(stage = name, "{message}");
        if let Some(bar) = self.running.lock().expect("progress lock").get(name) {
            bar.set_message(message);
        }
    }

    pub fn finished(&self, name: &str, outcome: &str, seconds: f64) {
        tracing::info!(stage = name, outcome, seconds, "finished");
        if let Some(bar) = self.running.lock().expect("progress lock").remove(name) {
            bar.finish_and_clear();
        }
        match &self.bars {
            Some((multi, overall)) => {
                overall.inc(1);
                let _ = multi.println(format!("  {outcome:<6} {name} ({seconds:.1}s)"));
            }
            None if !self.quiet => eprintln!("  {outcome:<6} {name} ({seconds:.1}s)"),
            None => {}
        }
    }

    pub fn note(&self, text: &str) {
        match &self.bars {
            Some((multi, _)) => {
                let _ = multi.println(text);
            }
            None if !self.quiet => eprintln!("{text}"),
            None => {}
        }
    }

    pub fn done(&self) {
        if let Some((_, overall)) = &self.bars {
            overall.finish_and_clear();
        }
    }
}
