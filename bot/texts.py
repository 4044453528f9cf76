"""Every sentence moodbot says, in English and Korean, in one place."""

from __future__ import annotations

from ml.labels import MOOD_KOREAN_NAMES

# How the songs of each mood's place sound (bot/moodspace.py has the numbers and the reasons).
SOUNDS: dict[str, dict[str, str]] = {
    "en": {
        "happy": "bright, upbeat",
        "surprise": "lively, eventful",
        "angry": "loud, driving",
        "fear": "tense, dark",
        "anxious": "restless, uneasy",
        "disgust": "sour, brooding",
        "sad": "gentle, slow",
        "hurt": "tender, aching",
        "embarrassed": "light, easy-going",
        "neutral": "even, unhurried",
        "calm": "soft, relaxed",
    },
    "ko": {
        "happy": "밝고 신나는",
        "surprise": "생기 있고 들뜬",
        "angry": "강렬하고 힘찬",
        "fear": "긴장감 있고 어두운",
        "anxious": "들썩이고 불안한",
        "disgust": "씁쓸하고 음울한",
        "sad": "잔잔하고 느린",
        "hurt": "여리고 아릿한",
        "embarrassed": "가볍고 편안한",
        "neutral": "무난하고 느긋한",
        "calm": "부드럽고 차분한",
    },
}

MESSAGES: dict[str, dict[str, str]] = {
    "en": {
        "help": (
            "Send me a selfie and I'll tell you the mood I see and find music for it.\n"
            "/history — your recent moods, with a chart\n"
            "/group — one playlist for this chat, from its members' recent moods "
            "(or send a group photo with /group)\n"
            "/mode match|lift|calm — music that matches your mood, lifts it, or calms it\n"
            "/genre <name> — only songs of one genre: k-pop, j-pop, acoustic, hip hop… "
            "(/genre off to clear)\n"
            "/fix <mood> — not quite? correct the mood of your last selfie\n"
            "/forget — delete everything I stored about you\n"
            "I keep only the emotion, its confidence and the time, never your photo."
        ),
        "one_face": "You look {emotion} {emoji} ({confidence} sure).",
        "unsure": "I'm not sure: maybe {first} ({p1}) or {second} ({p2}).",
        "many_faces": "I see {count} faces: {faces}.",
        "face_item": "{emotion} {emoji} {confidence}",
        "why_match": "🎵 {emotion} → {sound} {genre}songs: valence {valence}, energy {energy}.",
        "why_lift": "🎵 {emotion}, lifted a step → {sound} {genre}songs: valence {valence}, "
        "energy {energy}.",
        "why_calm": "🎵 {emotion}, calmed a step → {sound} {genre}songs: valence {valence}, "
        "energy {energy}.",
        "why_group": "🎵 Your moods blended → {sound} {genre}songs: valence {valence}, "
        "energy {energy}.",
        "why_widened": " Few {genre}songs sound just like that, so some are a little further off.",
        "no_face": "Sorry, I can't recognize a face in this photo. Try a brighter, "
        "front-facing selfie.",
        "unreadable": "I couldn't read that file as a photo. Please send a JPEG, PNG, WebP, "
        "GIF or BMP image.",
        "too_large": "That image is too large for me ({detail}). Please send a smaller one.",
        "busy": "I'm busy with other photos right now. Try again in a moment.",
        "closed": "I'm restarting. Try again in a moment.",
        "error": "Something went wrong on my side while reading your photo. Please try again.",
        "history_unsaved": "(I couldn't save this to your history just now.)",
        "history_unavailable": "Your history is not available right now. Please try again later.",
        "history_empty": "No moods yet. Send me a selfie!",
        "history_title": "Your last {count} moods:",
        "history_row": "{when} — {emotion} {emoji} {confidence}",
        "history_counts": "Last {days} days: {counts}",
        "group_empty": "Nobody here has sent me a selfie in the last {hours} hours. "
        "Send selfies first, or a group photo with /group.",
        "group_title": "Group mix for {count} {people}: {breakdown}.",
        "group_photo_title": "Group photo with {count} {people}: {breakdown}.",
        "person": "person",
        "people": "people",
        "forgotten": "Done: I deleted {count} mood records of yours. Nothing about you is left.",
        "mode_set": "Music mode set to {mode}.",
        "mode_bad": "Mode must be one of: match, lift, calm.",
        "genre_set": "From now on I'll pick {genre} songs.",
        "genre_cleared": "No genre any more: songs from every genre.",
        "genre_bad": "Please give a genre of at most 40 characters, like /genre k-pop.",
        "genre_unknown": "I don't know the genre “{genre}”. Closest: {closest}.",
        "genre_unknown_no_hint": "I don't know the genre “{genre}”. Try k-pop, j-pop, pop, rock, "
        "hip-hop, jazz, acoustic or classical.",
        "unknown_command": "I don't know that command. /help lists what I can do.",
        "not_a_file": "I couldn't open {path}: {reason}",
        # --- chat bots (Telegram, Discord) ---
        "help_telegram": (
            "Send me a selfie and I'll tell you the mood I see and find music for it. "
            "In a group, send the photo with /mood in its caption, mention me, or reply /mood "
            "to a photo. Not quite? Tap the mood you really feel under my answer (within a day).\n"
            "/history [n] — your recent moods, with a chart (in groups I send it to you "
            "privately)\n"
            "/groupmix — one playlist for this chat, from its members' recent moods (reply it "
            "to a group photo for everyone in the photo)\n"
            "/mode match|lift|calm — music that matches your mood, lifts it, or calms it\n"
            "/genre <name> — only songs of one genre: k-pop, j-pop, acoustic, hip hop… "
            "(/genre off to clear)\n"
            "/forget — delete everything I stored about you\n"
            "/privacy — what I store\n"
            "I keep only the emotion, its confidence and the time, never your photo."
        ),
        "help_discord": (
            "Send me a selfie and I'll tell you the mood I see and find music for it: use "
            "/mood with an image, send it to me in a direct message, or post it with a mention "
            "of me. Not quite? Press the mood you really feel under my answer (within a day).\n"
            "/history — your recent moods, with a chart (only you see it)\n"
            "/groupmix — one playlist for this channel, from its members' recent moods (add an "
            "image for everyone in a group photo)\n"
            "/mode — music that matches your mood, lifts it, or calms it\n"
            "/genre — only songs of one genre: k-pop, j-pop, acoustic… (off to clear)\n"
            "/forget — delete everything I stored about you\n"
            "/privacy — what I store\n"
            "I keep only the emotion, its confidence and the time, never your photo."
        ),
        "welcome": "Hi, I'm moodbot 👋",
        "privacy": (
            "For each selfie I analyse I store: the emotion I read, how sure I was, how many "
            "faces there were, the chat, your user id and the time. Your photo is analysed in "
            "memory and dropped right away; it never touches a disk. I also keep your /mode and "
            "/genre if you set them, and which songs I suggested to you (so that you don't get "
            "the same ones again). When you correct a mood with the buttons, I store your "
            "choice in its place together with the emotion I had read, to learn where I am wrong. "
            "Group mixes use members' moods from the last {hours} hours. "
            "{kept} /forget deletes all of it, in every chat, at once."
        ),
        "kept_days": "Moods older than {days} days are deleted automatically.",
        "kept": "Moods are kept until you delete them.",
        "hint": "Send me a selfie and I'll read your mood. /help lists everything I can do.",
        "rate_limited": "Slow down a little 🙂 Try again in {seconds} s.",
        "download_failed": "I couldn't download that photo. Please send it again.",
        "not_saved_other": "(Not saved to anyone's history: it isn't your photo.)",
        "mood_needs_photo": "Reply /mood to a photo, or send a photo with /mood in its caption.",
        "forget_confirm": "Delete all your moods and settings, in every chat? This cannot be "
        "undone.",
        "forget_yes": "Yes, delete everything",
        "forget_no": "Cancel",
        "forget_cancelled": "OK, I kept everything.",
        "not_your_button": "This button is for someone else.",
        "history_sent_privately": "I sent your history to you in a private chat.",
        "history_private_only": "I don't show personal history in groups. Open a private chat "
        "with me and send /history there.",
        "open_private_chat": "Open a private chat",
        "failed": "Sorry, something went wrong on my side. Please try again in a moment.",
        # --- "Not quite?": corrections ---
        "fix_more": "Not quite? Something else…",
        "fix_again": "Not quite? Change it",
        "corrected": "Got it: you feel {emotion} {emoji}. I changed it in your history.",
        "corrected_music_only": "Got it: {emotion} {emoji}. Here is music for that (nothing was "
        "saved).",
        "correction_invalid": "That button isn't valid for you, so I changed nothing.",
        "correction_expired": "Moods can be changed only within {hours} hours, so I kept this "
        "one as it is.",
        "correction_gone": "That mood is no longer in your history, so there is nothing to change.",
        "only_owner_can_fix": "Only {name} can change this.",
        "fix_usage": "Type /fix and the mood you really feel, e.g. /fix sad.",
        "fix_unknown": "I don't know that mood. Moods: {choices}.",
        "fix_nothing": "There is nothing to fix yet: send me a selfie first.",
        "history_row_corrected": "{when} — {emotion} {emoji} (your correction)",
        "chart_title": "Your moods",
        "chart_dots": "dot size = confidence",
        "chart_count": "count",
    },
    "ko": {
        "help": (
            "셀카를 보내 주시면 표정에서 감정을 읽고 어울리는 음악을 찾아 드려요.\n"
            "/history — 최근 감정 기록과 차트\n"
            "/group — 이 채팅방 멤버들의 최근 감정으로 고른 플레이리스트 "
            "(단체 사진과 함께 /group도 가능)\n"
            "/mode match|lift|calm — 감정에 맞추기, 기분 끌어올리기, 진정시키기\n"
            "/genre <이름> — 한 장르의 노래만: k-pop, j-pop, acoustic, 힙합… (/genre off로 해제)\n"
            "/fix <감정> — 아닌가요? 마지막 셀카의 감정 고치기\n"
            "/forget — 저장된 내 기록 모두 삭제\n"
            "사진은 저장하지 않고 감정, 확신도, 시간만 기록해요."
        ),
        "one_face": "{emotion} {emoji} 표정이에요 (확신도 {confidence}).",
        "unsure": "잘 모르겠어요: {first} ({p1}) 또는 {second} ({p2}) 같아요.",
        "many_faces": "얼굴 {count}개를 찾았어요: {faces}.",
        "face_item": "{emotion} {emoji} {confidence}",
        "why_match": "🎵 {emotion} → {sound} {genre}노래: 밝기(valence) {valence}, "
        "에너지(energy) {energy}.",
        "why_lift": "🎵 {emotion}, 한 걸음 밝게 → {sound} {genre}노래: 밝기(valence) {valence}, "
        "에너지(energy) {energy}.",
        "why_calm": "🎵 {emotion}, 한 걸음 차분하게 → {sound} {genre}노래: 밝기(valence) "
        "{valence}, 에너지(energy) {energy}.",
        "why_group": "🎵 모두의 감정을 섞어서 → {sound} {genre}노래: 밝기(valence) {valence}, "
        "에너지(energy) {energy}.",
        "why_widened": " 딱 맞는 {genre}노래가 적어서 조금 넓게 찾았어요.",
        "no_face": "죄송해요, 사진에서 얼굴을 찾지 못했어요. 밝은 곳에서 정면 셀카로 다시 "
        "보내 주세요.",
        "unreadable": "이 파일은 사진으로 읽을 수 없어요. JPEG, PNG, WebP, GIF, BMP 이미지를 "
        "보내 주세요.",
        "too_large": "이미지가 너무 커요 ({detail}). 더 작은 사진을 보내 주세요.",
        "busy": "지금 다른 사진을 처리하느라 바빠요. 잠시 후 다시 시도해 주세요.",
        "closed": "재시작하는 중이에요. 잠시 후 다시 시도해 주세요.",
        "error": "사진을 읽는 중에 문제가 생겼어요. 다시 시도해 주세요.",
        "history_unsaved": "(지금은 기록을 저장하지 못했어요.)",
        "history_unavailable": "지금은 기록을 볼 수 없어요. 잠시 후 다시 시도해 주세요.",
        "history_empty": "아직 기록이 없어요. 셀카를 보내 주세요!",
        "history_title": "최근 감정 {count}개:",
        "history_row": "{when} — {emotion} {emoji} {confidence}",
        "history_counts": "최근 {days}일: {counts}",
        "group_empty": "최근 {hours}시간 동안 이 방에서 셀카를 보낸 사람이 없어요. 먼저 셀카를 "
        "보내거나 단체 사진과 함께 /group을 보내 주세요.",
        "group_title": "{count}{people}의 그룹 믹스: {breakdown}.",
        "group_photo_title": "단체 사진 속 {count}{people}: {breakdown}.",
        "person": "명",
        "people": "명",
        "forgotten": "삭제했어요: 감정 기록 {count}개를 지웠고, 남은 정보는 없어요.",
        "mode_set": "음악 모드를 {mode}(으)로 바꿨어요.",
        "mode_bad": "모드는 match, lift, calm 중 하나예요.",
        "genre_set": "이제부터 {genre} 노래로 골라 드릴게요.",
        "genre_cleared": "장르를 해제했어요. 모든 장르에서 골라요.",
        "genre_bad": "장르는 40자 이내로 적어 주세요. 예: /genre k-pop",
        "genre_unknown": "“{genre}” 장르는 몰라요. 비슷한 장르: {closest}.",
        "genre_unknown_no_hint": "“{genre}” 장르는 몰라요. k-pop, j-pop, pop, rock, hip-hop, "
        "jazz, acoustic, classical 같은 장르를 써 보세요.",
        "unknown_command": "모르는 명령이에요. /help 로 할 수 있는 일을 보세요.",
        "not_a_file": "{path} 파일을 열 수 없어요: {reason}",
        # --- chat bots (Telegram, Discord) ---
        "help_telegram": (
            "셀카를 보내 주시면 표정에서 감정을 읽고 어울리는 음악을 찾아 드려요. 그룹에서는 "
            "사진 설명에 /mood를 쓰거나, 저를 멘션하거나, 사진에 /mood로 답장해 주세요. "
            "아닌가요? 제 답 아래에서 실제 기분을 누르세요 (하루 안에).\n"
            "/history [n] — 최근 감정 기록과 차트 (그룹에서는 개인 채팅으로 보내 드려요)\n"
            "/groupmix — 이 채팅방 멤버들의 최근 감정으로 고른 플레이리스트 (단체 사진에 "
            "답장하면 사진 속 모두를 위한 믹스)\n"
            "/mode match|lift|calm — 감정에 맞추기, 기분 끌어올리기, 진정시키기\n"
            "/genre <이름> — 한 장르의 노래만: k-pop, j-pop, acoustic, 힙합… (/genre off로 해제)\n"
            "/forget — 저장된 내 기록 모두 삭제\n"
            "/privacy — 무엇을 저장하는지\n"
            "사진은 저장하지 않고 감정, 확신도, 시간만 기록해요."
        ),
        "help_discord": (
            "셀카를 보내 주시면 표정에서 감정을 읽고 어울리는 음악을 찾아 드려요. /mood에 "
            "이미지를 첨부하거나, DM으로 보내거나, 저를 멘션하며 올려 주세요. 아닌가요? 제 답 "
            "아래에서 실제 기분을 누르세요 (하루 안에).\n"
            "/history — 최근 감정 기록과 차트 (나만 볼 수 있어요)\n"
            "/groupmix — 이 채널 멤버들의 최근 감정으로 고른 플레이리스트 (이미지를 붙이면 "
            "단체 사진 속 모두를 위한 믹스)\n"
            "/mode — 감정에 맞추기, 기분 끌어올리기, 진정시키기\n"
            "/genre — 한 장르의 노래만: k-pop, j-pop, acoustic… (off로 해제)\n"
            "/forget — 저장된 내 기록 모두 삭제\n"
            "/privacy — 무엇을 저장하는지\n"
            "사진은 저장하지 않고 감정, 확신도, 시간만 기록해요."
        ),
        "welcome": "안녕하세요, moodbot이에요 👋",
        "privacy": (
            "셀카를 분석할 때마다 읽은 감정, 확신도, 얼굴 수, 채팅방, 사용자 ID, 시간을 "
            "저장해요. 사진은 메모리에서 분석한 뒤 바로 버리고 디스크에 저장하지 않아요. "
            "/mode와 /genre를 설정했다면 그 설정도, 같은 노래를 또 추천하지 않도록 추천한 노래도 "
            "저장해요. 버튼으로 감정을 고치면, 제가 틀린 곳을 알 수 있도록 고친 감정을 제가 읽은 "
            "감정과 함께 저장해요. 그룹 믹스는 최근 {hours}시간 동안의 멤버 감정을 사용해요. "
            "{kept} /forget 하면 모든 채팅방의 기록이 한 번에 지워져요."
        ),
        "kept_days": "{days}일이 지난 감정 기록은 자동으로 지워져요.",
        "kept": "감정 기록은 직접 지우기 전까지 보관해요.",
        "hint": "셀카를 보내 주시면 감정을 읽어 드려요. /help 로 할 수 있는 일을 보세요.",
        "rate_limited": "조금 천천히 보내 주세요 🙂 {seconds}초 뒤에 다시 시도해 주세요.",
        "download_failed": "사진을 내려받지 못했어요. 다시 보내 주세요.",
        "not_saved_other": "(내 사진이 아니라서 누구의 기록에도 저장하지 않았어요.)",
        "mood_needs_photo": "사진에 /mood로 답장하거나, 사진 설명에 /mood를 적어 보내 주세요.",
        "forget_confirm": "모든 채팅방의 감정 기록과 설정을 삭제할까요? 되돌릴 수 없어요.",
        "forget_yes": "네, 모두 삭제해요",
        "forget_no": "취소",
        "forget_cancelled": "알겠어요, 아무것도 지우지 않았어요.",
        "not_your_button": "다른 사람을 위한 버튼이에요.",
        "history_sent_privately": "기록을 개인 채팅으로 보내 드렸어요.",
        "history_private_only": "그룹에서는 개인 기록을 보여 드리지 않아요. 저와 개인 채팅을 "
        "열고 /history를 보내 주세요.",
        "open_private_chat": "개인 채팅 열기",
        "failed": "죄송해요, 문제가 생겼어요. 잠시 후 다시 시도해 주세요.",
        # --- "Not quite?": corrections ---
        "fix_more": "아닌가요? 다른 감정…",
        "fix_again": "아닌가요? 바꾸기",
        "corrected": "알겠어요: {emotion} {emoji} 기분이군요. 기록도 바꿔 두었어요.",
        "corrected_music_only": "알겠어요: {emotion} {emoji}. 그에 맞는 음악이에요 (저장한 것은 "
        "없어요).",
        "correction_invalid": "사용할 수 없는 버튼이라 아무것도 바꾸지 않았어요.",
        "correction_expired": "감정은 {hours}시간 안에만 바꿀 수 있어서 그대로 두었어요.",
        "correction_gone": "그 감정 기록은 이미 지워져서 바꿀 것이 없어요.",
        "only_owner_can_fix": "{name}님만 바꿀 수 있어요.",
        "fix_usage": "/fix 뒤에 실제 기분을 적어 주세요. 예: /fix 슬픔",
        "fix_unknown": "모르는 감정이에요. 감정: {choices}.",
        "fix_nothing": "아직 고칠 분석이 없어요. 먼저 셀카를 보내 주세요.",
        "history_row_corrected": "{when} — {emotion} {emoji} (직접 고침)",
        "chart_title": "내 감정",
        "chart_dots": "점 크기 = 확신도",
        "chart_count": "횟수",
    },
}

LANGUAGES = tuple(MESSAGES)

# The command menus of both bots (Telegram's /setMyCommands, Discord's slash commands).
COMMANDS: dict[str, dict[str, str]] = {
    "en": {
        "mood": "Read the mood on a photo and find music for it",
        "history": "Your recent moods, with a chart",
        "groupmix": "One playlist for this chat, from its members' moods",
        "mode": "Music that matches your mood, lifts it, or calms it",
        "genre": "Only songs of one genre (k-pop, j-pop, acoustic...)",
        "forget": "Delete everything I stored about you",
        "privacy": "What I store, and for how long",
        "help": "What I can do",
    },
    "ko": {
        "mood": "사진 속 표정의 감정을 읽고 음악 찾기",
        "history": "최근 감정 기록과 차트",
        "groupmix": "멤버들의 감정으로 고른 이 채팅방의 플레이리스트",
        "mode": "감정에 맞추기, 끌어올리기, 진정시키기",
        "genre": "한 장르의 노래만 (k-pop, j-pop, acoustic...)",
        "forget": "저장된 내 기록 모두 삭제",
        "privacy": "무엇을 얼마나 저장하는지",
        "help": "할 수 있는 일",
    },
}


def language_of(code: str | None) -> str:
    """Korean for Korean users, English for everyone else (e.g. 'ko-KR' -> 'ko')."""
    return "ko" if code and code.lower().startswith("ko") else "en"


def say(lang: str, key: str, **values: object) -> str:
    """The message `key` in `lang` (English when missing), filled with `values`."""
    template = MESSAGES.get(lang, MESSAGES["en"]).get(key) or MESSAGES["en"][key]
    return template.format(**values)


def sound_name(lang: str, mood: str) -> str:
    """How the songs for a mood's place sound: 'gentle, slow'."""
    return SOUNDS.get(lang, SOUNDS["en"]).get(mood) or SOUNDS["en"].get(mood, mood)


def emotion_name(lang: str, emotion: str) -> str:
    return MOOD_KOREAN_NAMES.get(emotion, emotion) if lang == "ko" else emotion


def percent(p: float) -> str:
    return f"{round(p * 100)}%"
