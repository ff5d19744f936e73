//! Calendars: each booked slot, and every request decided (booked or in conflict), so a
//! resent request is answered as before.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum CalendarRequests {
    Table,
    CalendarId,
    RequestId,
    User,
    Title,
    Start,
    End,
    Booked,
    ConflictsWith,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(CalendarRequests::Table)
                    .if_not_exists()
                    .col(text(CalendarRequests::CalendarId))
                    .col(text(CalendarRequests::RequestId))
                    .col(text(CalendarRequests::User))
                    .col(text(CalendarRequests::Title))
                    .col(big_integer(CalendarRequests::Start))
                    .col(big_integer(CalendarRequests::End))
                    .col(boolean(CalendarRequests::Booked))
                    .col(text_null(CalendarRequests::ConflictsWith))
                    .primary_key(
                        Index::create()
                            .col(CalendarRequests::CalendarId)
                            .col(CalendarRequests::RequestId),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("calendar_bookings_by_start")
                    .table(CalendarRequests::Table)
                    .col(CalendarRequests::CalendarId)
                    .col(CalendarRequests::Booked)
                    .col(CalendarRequests::Start)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(CalendarRequests::Table).to_owned())
            .await
    }
}
