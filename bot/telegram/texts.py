"""Every sentence the bot says, in one place (short: they are read on a phone)."""

from __future__ import annotations

WELCOME = (
    "👋 Welcome to MedCrowd!\n\n"
    "Doctors need pixel-accurate outlines of structures in medical images to train AI that helps "
    "patients. An AI draws a first outline; you check it in a few seconds: accept it, adjust it "
    "or reject it. Many volunteers' answers are merged into labels an expert would sign.\n\n"
    "Before we start, please read the terms."
)
TERMS = (
    "📄 Terms, in short:\n"
    "• The images are de-identified research images; do not try to identify anyone.\n"
    "• We store only your Telegram user id, an optional nickname, your answers and scores. "
    "Never your name, username or photo.\n"
    "• Your answers become part of an open research dataset.\n"
    "• /forget deletes your personal data at any time (your anonymous answers keep counting).\n"
    "• You can stop whenever you like; /pause turns off reminders."
)
CONSENT_BUTTON = "✅ I agree"
DECLINE_BUTTON = "Not now"
DECLINED = "No problem. Send /start whenever you change your mind."
NEED_CONSENT = "Please agree to the terms first: send /start."
ASK_NICKNAME = (
    "Would you like a nickname on the leaderboards? Send it as a message "
    "(3-24 letters, digits, spaces, _ . -), or tap Skip to stay anonymous."
)
SKIP_NICKNAME = "Skip"
NICKNAME_SET = "Nice to meet you, {nickname}!"
NICKNAME_SKIPPED = "You will appear as an anonymous volunteer."
TUTORIAL = (
    "🎓 First, {n} practice crops with instant feedback. The red line is the AI's outline of "
    "the {structure}. Is it right?"
)
QUESTION = "Is the red outline of the {structure} right?"
QUESTION_GOLD = "🎓 Practice: is the red outline of the {structure} right?"
ACCEPT = "✅ Accept"
ADJUST = "✏️ Adjust"
REJECT = "❌ Reject"
UNSURE = "🤷 Can't tell"
ADJUST_MENU = "✏️ Adjust: pick a fix. The outline shown is your working version."
CHOICES = "Options"
TIGHTER_LOOSER = "Tighter / looser"
GRID = "Tap the grid"
EDITOR = "🖌 Open the editor"
UNDO = "↩️ Undo"
DONE = "✔️ Done"
BACK = "⬅️ Back"
REFINE = "🔄 Redraw"
TAP_BOX = "▭ Box"
TAP_POSITIVE = "🟢 Inside"
TAP_NEGATIVE = "🔴 Outside"
GRID_POINTS_HELP = (
    "\nThis model also takes points: choose 🟢 Inside and tap cells inside the {structure}, "
    "or 🔴 Outside and tap where it is not, then 🔄 Redraw."
)
GRID_HELP = (
    "Tap the cells the {structure} covers (tap again to unselect), then 🔄 Redraw. "
    "Selected: {cells}"
)
CHOICES_HELP = "Tap the option that fits best; the outline updates."
NOTHING_TO_UNDO = "Nothing to undo"
NO_CHANGE = "Pick a fix first (or go back and accept)"
THANKS = "Thanks!"
STORED_ALREADY = "Already saved 👍"
SLOW_DOWN = "Slow down a little 🙂"
NO_WORK = "🎉 {reason}"
STALE = "⏭ {reason}"
RELIABILITY_ALERT = (
    "⚠️ Volunteer #{id} ({name}): after {evidence} answers, the crowd model finds that their "
    "answers {judged}. Their weight in the consensus is near zero already; /ban {id} also takes "
    "their answers on open crops out of it."
)
UNKNOWN_BUTTON = "This button is not one of mine (or it is out of date)."
GOLD_FEEDBACK = (
    "{emoji} Your score on this practice crop: {score:.0%}.\n"
    "Green = agreed, blue = missed, pink = extra."
)
GOLD_REJECT_RIGHT = "✅ Right: the outline was not good enough."
GOLD_REJECT_WRONG = "❌ This outline was actually fine (score {dice:.0%} against the expert's)."
NEXT = "Next ▶️"
HELP = (
    "How it works: you see a crop with the AI's red outline. ✅ if it hugs the structure, "
    "✏️ to fix it (options, tighter/looser, or tap the grid), ❌ if it is wrong, 🤷 if you "
    "cannot tell.\n\n"
    "Points reward answers that agree with the final consensus, not speed.\n\n"
    "/next a crop · /me your card · /leaderboard rankings · /pause no reminders · "
    "/resume reminders · /forget delete my data · /help this text"
)
PAUSED = "⏸ Paused: no reminders or digests. /resume to turn them back on; /next still works."
RESUMED = "▶️ Reminders and digests are on again."
FORGET_CONFIRM = (
    "This deletes your nickname, consent, streak and Telegram link for good. Your answers stay, "
    "anonymous. Are you sure?"
)
FORGET_YES = "Yes, forget me"
FORGET_NO = "Cancel"
FORGOTTEN = "Done: your personal data is deleted. Thank you for everything you contributed."
CANCELLED = "Cancelled."
LEADERBOARD_HEAD = "🏆 Leaderboard ({period})"
LEADERBOARD_EMPTY = "No points yet this {period}: be the first!"
LEADERBOARD_YOU = "You: #{rank} with {points} points"
LEADERBOARD_YOU_NONE = "You have no points yet in this period."
WEEK = "this week"
ALL_TIME = "all time"
DIGEST = (
    "📬 Since last time, {answers} of your answers reached a final consensus: "
    "{matched} matched it. You earned {points} points."
)
DIGEST_BADGES = "🏅 New badge(s): {badges}"
ERROR = "Sorry, something went wrong on our side. Please try again in a moment."
COMMANDS = [
    ("next", "the next crop"),
    ("me", "your profile card"),
    ("leaderboard", "this week and all time"),
    ("help", "how it works"),
    ("pause", "no reminders"),
    ("resume", "reminders on again"),
    ("forget", "delete my personal data"),
]
