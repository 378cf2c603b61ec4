; NSIS installer for logit-lens, built on Linux by packaging/build-windows.sh (makensis), which
; defines VERSION, STAGE (the staged files) and OUT. Per-user install (no admin rights) into
; %LOCALAPPDATA%\Programs\logit-lens; silent with /S (and /D=C:\path, last, to choose the folder).
; A 64-bit installer (the app is x64 only), which also runs on a 64-bit-only Wine.
Target amd64-unicode
Name "logit-lens ${VERSION}"
OutFile "${OUT}/logit-lens-${VERSION}-setup.exe"
InstallDir "$LOCALAPPDATA\Programs\logit-lens"
InstallDirRegKey HKCU "Software\logit-lens" "InstallDir"
RequestExecutionLevel user
SetCompressor /SOLID lzma
Icon "${STAGE}/logit-lens.ico"
UninstallIcon "${STAGE}/logit-lens.ico"
BrandingText "logit-lens ${VERSION}"

Page directory
Page instfiles
UninstPage uninstConfirm
UninstPage instfiles

!define UNINST_KEY "Software\Microsoft\Windows\CurrentVersion\Uninstall\logit-lens"
!define APP_KEY "Software\Classes\Applications\logit-lens.exe"

Section "Install"
  SetOutPath "$INSTDIR"
  File /r "${STAGE}/*"
  WriteRegStr HKCU "Software\logit-lens" "InstallDir" "$INSTDIR"
  ; Start menu, with the icon.
  CreateShortCut "$SMPROGRAMS\logit-lens.lnk" "$INSTDIR\logit-lens.exe" "" "$INSTDIR\logit-lens.ico" 0
  ; "Open with" for prompt text files (.txt, .md): logit-lens.exe FILE opens the app on it.
  WriteRegStr HKCU "${APP_KEY}" "FriendlyAppName" "logit-lens"
  WriteRegStr HKCU "${APP_KEY}\DefaultIcon" "" "$INSTDIR\logit-lens.ico"
  WriteRegStr HKCU "${APP_KEY}\shell\open\command" "" '"$INSTDIR\logit-lens.exe" "%1"'
  WriteRegStr HKCU "${APP_KEY}\SupportedTypes" ".txt" ""
  WriteRegStr HKCU "${APP_KEY}\SupportedTypes" ".md" ""
  WriteRegStr HKCU "Software\Classes\.txt\OpenWithList\logit-lens.exe" "" ""
  WriteRegStr HKCU "Software\Classes\.md\OpenWithList\logit-lens.exe" "" ""
  ; Uninstaller and its entry in Apps & features.
  WriteUninstaller "$INSTDIR\uninstall.exe"
  WriteRegStr HKCU "${UNINST_KEY}" "DisplayName" "logit-lens"
  WriteRegStr HKCU "${UNINST_KEY}" "DisplayVersion" "${VERSION}"
  WriteRegStr HKCU "${UNINST_KEY}" "DisplayIcon" "$INSTDIR\logit-lens.ico"
  WriteRegStr HKCU "${UNINST_KEY}" "InstallLocation" "$INSTDIR"
  WriteRegStr HKCU "${UNINST_KEY}" "UninstallString" '"$INSTDIR\uninstall.exe"'
  WriteRegStr HKCU "${UNINST_KEY}" "QuietUninstallString" '"$INSTDIR\uninstall.exe" /S'
  WriteRegDWORD HKCU "${UNINST_KEY}" "NoModify" 1
  WriteRegDWORD HKCU "${UNINST_KEY}" "NoRepair" 1
SectionEnd

Section "Uninstall"
  Delete "$SMPROGRAMS\logit-lens.lnk"
  ; Only what the installer put there (settings and the bundle cache in %APPDATA% and
  ; %LOCALAPPDATA%\logit-lens are the user's and stay).
  RMDir /r "$INSTDIR\demo-model"
  RMDir /r "$INSTDIR\prompts"
  RMDir /r "$INSTDIR\nnsight"
  Delete "$INSTDIR\logit-lens.exe"
  Delete "$INSTDIR\onnxruntime.dll"
  Delete "$INSTDIR\DirectML.dll"
  Delete "$INSTDIR\onnxruntime_providers_shared.dll"
  Delete "$INSTDIR\onnxruntime-LICENSE"
  Delete "$INSTDIR\onnxruntime-ThirdPartyNotices.txt"
  Delete "$INSTDIR\logit-lens.ico"
  Delete "$INSTDIR\README.md"
  Delete "$INSTDIR\uninstall.exe"
  RMDir "$INSTDIR"
  DeleteRegKey HKCU "${APP_KEY}"
  DeleteRegValue HKCU "Software\Classes\.txt\OpenWithList\logit-lens.exe" ""
  DeleteRegKey HKCU "Software\Classes\.txt\OpenWithList\logit-lens.exe"
  DeleteRegKey HKCU "Software\Classes\.md\OpenWithList\logit-lens.exe"
  DeleteRegKey HKCU "Software\logit-lens"
  DeleteRegKey HKCU "${UNINST_KEY}"
SectionEnd
