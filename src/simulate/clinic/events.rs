//! Program events of a simulated patient: state changes, outcomes (death, transfer out,
//! treatment stopped), re-initiation and a registration voided as entered in error.

use chrono::NaiveDate;
use mysql_async::Value;

use super::rows::{at, dt, text};
use super::{Clinic, Status};

impl Clinic {
    /// Ends the current HIV-program state and starts `state` on `date`, in one transaction.
    pub(super) async fn set_state(
        &mut self,
        i: usize,
        date: NaiveDate,
        state: i64,
    ) -> anyhow::Result<()> {
        self.begin().await?;
        self.new_state(i, date, state).await?;
        self.commit().await
    }

    pub(super) async fn new_state(
        &mut self,
        i: usize,
        date: NaiveDate,
        state: i64,
    ) -> anyhow::Result<()> {
        let ppid = self.patients[i].patient_program_id;
        let when = at(date, 500);
        self.exec("UPDATE patient_state SET end_date = ?, date_changed = ? WHERE patient_program_id = ? AND end_date IS NULL",
            vec![text(&date.to_string()), dt(when), Value::Int(ppid)]).await?;
        let r0 = self.rng.uuid();
        self.exec("INSERT INTO patient_state (patient_program_id, state, start_date, date_created, uuid) VALUES (?, ?, ?, ?, ?)",
            vec![Value::Int(ppid), Value::Int(state), text(&date.to_string()), dt(when), text(&r0)]).await
    }

    /// Death (3 or 127), transfer out (2) or treatment stopped (6).
    pub(super) async fn outcome(
        &mut self,
        i: usize,
        date: NaiveDate,
        state: i64,
    ) -> anyhow::Result<()> {
        let pid = self.patients[i].id;
        let when = at(date, 500);
        self.begin().await?;
        {
            self.new_state(i, date, state).await?;
            if state == 3 || state == 127 {
                self.exec("UPDATE person SET dead = 1, death_date = ?, changed_by = 1, date_changed = ? WHERE person_id = ?",
                    vec![dt(when), dt(when), Value::Int(pid)]).await?;
            }
            self.encounter(pid, 70, when).await?;
        }
        self.commit().await?;
        self.patients[i].status = Status::Exited(state);
        Ok(())
    }

    /// A patient back on ART after stopping, transferring out or defaulting: state 7 again
    /// and a visit with a dispensation today.
    pub(super) async fn reinitiate(&mut self, i: usize, date: NaiveDate) -> anyhow::Result<()> {
        self.set_state(i, date, 7).await?;
        self.patients[i].status = Status::Active;
        self.follow_up(i, date, date).await
    }

    /// A registration entered in error: the patient and the person are voided.
    pub(super) async fn void_patient(&mut self, i: usize, date: NaiveDate) -> anyhow::Result<()> {
        let pid = self.patients[i].id;
        let when = dt(at(date, 620));
        self.begin().await?;
        {
            self.exec("UPDATE patient SET voided = 1, voided_by = 1, date_voided = ?, void_reason = 'duplicate' WHERE patient_id = ?",
                vec![when.clone(), Value::Int(pid)]).await?;
            self.exec("UPDATE person SET voided = 1, voided_by = 1, date_voided = ?, void_reason = 'duplicate' WHERE person_id = ?",
                vec![when, Value::Int(pid)]).await?;
        }
        self.commit().await?;
        self.patients[i].status = Status::Voided;
        Ok(())
    }
}
