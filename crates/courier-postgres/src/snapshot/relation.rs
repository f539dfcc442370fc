use std::sync::Arc;

use courier_core::{Column, Relation};

use crate::catalog::Catalog;
use crate::pgoutput::DecodeError;
use crate::setup::GeneratedColumns;

/// The shape of a table as the catalog describes it now, for copying it;
/// `None` when the table does not exist. It has the columns the stream's
/// rows have: the publication leaves out the generated columns that
/// `generated` does not publish, and so does the copy.
pub async fn relation_from_catalog(
    catalog: &mut Catalog,
    oid: u32,
    generated: GeneratedColumns,
) -> Result<Option<Arc<Relation>>, DecodeError> {
    let Some(info) = catalog.table_columns(oid).await? else {
        return Ok(None);
    };
    let mut columns = Vec::with_capacity(info.columns.len());
    for c in info.columns {
        if !generated.publishes(c.generated) {
            continue;
        }
        let resolved = catalog.resolve_type(c.type_oid).await?;
        columns.push(Column {
            name: c.name,
            type_oid: c.type_oid,
            type_modifier: c.type_modifier,
            type_name: c.type_name,
            pg_type: resolved.pg_type.with_modifier(c.type_modifier),
            nullable: !c.not_null && !c.is_key,
            is_key: c.is_key,
        });
    }
    Ok(Some(Arc::new(Relation {
        oid,
        id: info.id,
        columns,
    })))
}
