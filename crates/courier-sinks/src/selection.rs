use courier_core::{Change, Op, TableFilter, TableId};

/// Which source tables a sink receives: its `tables` setting, or every
/// source table when the setting is absent.
#[derive(Clone, Debug, Default)]
pub struct TableSelection(Option<TableFilter>);

impl TableSelection {
    /// Every source table.
    pub fn all() -> Self {
        TableSelection(None)
    }

    /// Only tables matching `filter`.
    pub fn only(filter: TableFilter) -> Self {
        TableSelection(Some(filter))
    }

    /// Parses an optional `tables = [...]` setting.
    pub fn from_setting(
        tables: Option<&[String]>,
    ) -> Result<Self, courier_core::TablePatternError> {
        Ok(match tables {
            None => TableSelection::all(),
            Some(t) => TableSelection::only(TableFilter::new(t)?),
        })
    }

    pub fn includes(&self, t: &TableId) -> bool {
        self.0.as_ref().is_none_or(|f| f.matches(t))
    }

    /// Whether the sink applies `change` as a change of a table: one of a
    /// selected table, never the source of an outbox event (those reach
    /// only the outbox routers of a sink, see [`Change::outbox`]).
    pub fn selects(&self, change: &Change) -> bool {
        change.outbox().is_none() && self.includes(&change.relation().id)
    }
}

/// A piece of a batch as a keyed sink applies it: a run of row changes
/// (which may be applied concurrently, one winner per key), or a truncate,
/// which is a barrier between runs.
#[derive(Debug)]
pub enum Segment<'a> {
    Rows(Vec<&'a Change>),
    Truncate(&'a Change),
}

impl TableSelection {
    /// The changes of selected tables (given in stream order), cut into
    /// runs of row changes at each truncate. Empty runs are left out.
    pub fn segments<'a>(&self, changes: impl IntoIterator<Item = &'a Change>) -> Vec<Segment<'a>> {
        let mut out = Vec::new();
        let mut run: Vec<&Change> = Vec::new();
        for c in changes.into_iter().filter(|c| self.selects(c)) {
            if c.op() == Op::Truncate {
                if !run.is_empty() {
                    out.push(Segment::Rows(std::mem::take(&mut run)));
                }
                out.push(Segment::Truncate(c));
            } else {
                run.push(c);
            }
        }
        if !run.is_empty() {
            out.push(Segment::Rows(run));
        }
        out
    }
}
