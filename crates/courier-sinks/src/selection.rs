use courier_core::{TableFilter, TableId};

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
}
